"""From a baseline service and the swarm's nodes to a Docker service spec; and back.

Pure functions, no Docker I/O: the reconciler fetches, these decide.

* `build` resolves what depends on the cluster: the image for the architectures the
  placement selects, the replica count for `managers` / `workers`, and node exclusions
  for nodes that cannot run the chosen image.
* `managed` projects any service spec (ours, or one read back from Docker with its
  defaults filled in) onto the fields the baseline manages, normalised, so that two specs
  compare equal exactly when applying one over the other would change nothing.
* `merge` writes the managed fields of a desired spec into the current spec, keeping
  everything else (networks, resources set by hand, Docker's own defaults).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.baseline.spec import (
    ARCH_ALIASES,
    Constraint,
    ServiceDef,
    UpdatePolicy,
    parse_constraint,
)
from controller.dockerapi import docker_time

OWNER_LABEL = "swarm-enroll.baseline"
OWNER_VALUE = "true"
HASH_LABEL = "swarm-enroll.baseline.hash"
# Go's names for the architectures Docker reports in uname form (Swarm compares either)
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class NodeView:
    """What placement depends on, from a node's Docker attrs."""

    id: str
    hostname: str
    role: str
    state: str
    availability: str
    arch: str
    os: str = "linux"
    labels: tuple[tuple[str, str], ...] = ()
    engine_labels: tuple[tuple[str, str], ...] = ()
    leader: bool = False
    reachability: str = ""
    addr: str = ""

    @property
    def schedulable(self) -> bool:
        """Ready and Active: the scheduler gives it new tasks."""
        return self.state == "ready" and self.availability == "active"

    @property
    def schedulable_soon(self) -> bool:
        """Schedulable, or Active in state `unknown`: just after a Raft election every node
        is `unknown` until it reports to the new leader."""
        return self.availability == "active" and self.state in ("ready", "unknown")

    @property
    def canonical_arch(self) -> str:
        return ARCH_ALIASES.get(self.arch.lower(), self.arch.lower())


def node_view(attrs: dict[str, Any]) -> NodeView:
    spec = attrs.get("Spec") or {}
    desc = attrs.get("Description") or {}
    platform = desc.get("Platform") or {}
    engine = desc.get("Engine") or {}
    manager = attrs.get("ManagerStatus") or {}
    return NodeView(
        id=attrs.get("ID", ""), hostname=desc.get("Hostname", ""),
        role=spec.get("Role", "worker"), state=(attrs.get("Status") or {}).get("State", ""),
        availability=spec.get("Availability", "active"),
        arch=platform.get("Architecture", ""), os=platform.get("OS", "linux"),
        labels=tuple(sorted((spec.get("Labels") or {}).items())),
        engine_labels=tuple(sorted((engine.get("Labels") or {}).items())),
        leader=bool(manager.get("Leader")), reachability=manager.get("Reachability", ""),
        addr=manager.get("Addr", "") or (attrs.get("Status") or {}).get("Addr", ""),
    )


def shape(nodes: list[NodeView]) -> tuple[Any, ...]:
    """What a reconcile depends on: when this changes, the desired specs may change."""
    return tuple(sorted((n.id, n.hostname, n.role, n.schedulable, n.arch, n.os, n.labels,
                         n.engine_labels) for n in nodes))


def matches(constraint: Constraint, node: NodeView) -> bool:
    """Swarm's own rule: case-insensitive equality; a missing label is the empty string."""
    key = constraint.key
    if key == "node.id":
        values = [node.id]
    elif key == "node.hostname":
        values = [node.hostname]
    elif key == "node.role":
        values = [node.role]
    elif key == "node.platform.os":
        values = [node.os]
    elif key == "node.platform.arch":
        values = [node.arch, _GOARCH.get(node.arch, node.arch), node.canonical_arch]
    elif key.startswith("node.labels."):
        values = [dict(node.labels).get(key[len("node.labels."):], "")]
    else:
        values = [dict(node.engine_labels).get(key[len("engine.labels."):], "")]
    equal = any(v.lower() == constraint.value.lower() for v in values)
    return equal if constraint.op == "==" else not equal


def allowed(svc: ServiceDef, node: NodeView) -> bool:
    return all(matches(c, node) for c in svc.constraints)


@dataclass
class Desired:
    """A baseline service resolved against the current nodes."""

    name: str
    spec: dict[str, Any]
    image: str
    replicas: int | None  # None for global services
    eligible: list[str] = field(default_factory=list)  # hostnames that may run a task now
    excluded: list[str] = field(default_factory=list)  # hostnames left out for their arch
    warnings: list[str] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return spec_hash(self.spec)


def choose_image(svc: ServiceDef, nodes: list[NodeView]) -> tuple[str, list[NodeView]]:
    """The image for this service, and the constraint-allowed nodes that cannot run it.

    One service has one image. When the nodes the placement selects need different images
    (a mixed cluster), the image wanted by most schedulable nodes wins (ties: the order of
    the file's image mapping, the default last), and the nodes that need another image are
    excluded by node id, so that no task lands on a node that cannot run it. A node in
    state `unknown` votes as a Ready one (`schedulable_soon`): the image must not flap
    after an election (to the file's first, or to the architecture of the nodes that
    reported first) and back.
    """
    candidates = [n for n in nodes if allowed(svc, n)]
    votes = Counter(svc.image_for(n.canonical_arch) for n in candidates if n.schedulable_soon)
    votes.pop("", None)
    order = svc.all_images
    if votes:
        image = max(votes, key=lambda i: (votes[i], -order.index(i)))
    else:
        image = svc.image or (order[0] if order else "")
    excluded = [n for n in candidates if svc.image_for(n.canonical_arch) != image]
    return image, excluded


def _policy(p: UpdatePolicy) -> dict[str, Any]:
    return {"Parallelism": p.parallelism, "Delay": p.delay, "FailureAction": p.failure_action,
            "Monitor": p.monitor, "MaxFailureRatio": p.max_failure_ratio, "Order": p.order}


def build(svc: ServiceDef, nodes: list[NodeView]) -> Desired:
    image, excluded = choose_image(svc, nodes)
    excluded_ids = {n.id for n in excluded}
    runnable = [n for n in nodes if n.schedulable and allowed(svc, n)
                and n.id not in excluded_ids]
    constraints = [c.text for c in svc.constraints]
    constraints += sorted(f"node.id!={n.id}" for n in excluded)
    placement: dict[str, Any] = {"Constraints": constraints}
    replicas: int | None = None
    if svc.mode == "global":
        mode: dict[str, Any] = {"Global": {}}
    else:
        replicas = svc.replicas
        if svc.max_per_node:
            placement["MaxReplicas"] = svc.max_per_node
        mode = {"Replicated": {"Replicas": replicas}}
    container: dict[str, Any] = {"Image": image}
    if svc.command:
        container["Args"] = list(svc.command)
    if svc.environment:
        container["Env"] = list(svc.environment)
    if svc.mounts:
        container["Mounts"] = [{"Type": "bind", "Source": m.source, "Target": m.target,
                                "ReadOnly": m.read_only} for m in svc.mounts]
    spec: dict[str, Any] = {
        "Name": svc.name,
        "Labels": {OWNER_LABEL: OWNER_VALUE},
        "TaskTemplate": {"ContainerSpec": container, "Placement": placement},
        "Mode": mode,
        "UpdateConfig": _policy(svc.update),
        "RollbackConfig": _policy(svc.rollback),
        "EndpointSpec": {"Ports": [
            {"Protocol": p.protocol, "TargetPort": p.target, "PublishedPort": p.published,
             "PublishMode": p.mode} for p in svc.ports]},
    }
    spec["Labels"][HASH_LABEL] = spec_hash(spec)
    warnings = []
    if excluded:
        names = ", ".join(f"{n.hostname} ({n.arch or 'unknown arch'})" for n in excluded)
        warnings.append(f"runs {image} only; left out for their architecture: {names} "
                        "(declare a multi-arch image, or a second service constrained to "
                        "node.platform.arch)")
    if not runnable:
        warnings.append("no Ready, Active node satisfies the placement now")
    return Desired(svc.name, spec, image, replicas, sorted(n.hostname for n in runnable),
                   sorted(n.hostname for n in excluded), warnings)


# ---- normalisation and comparison -------------------------------------------------------


def _canonical_constraint(text: str) -> str:
    try:
        return parse_constraint(text).text
    except ValueError:
        return text.strip()


def _policy_view(p: dict[str, Any] | None) -> dict[str, Any]:
    # Docker leaves out zero values (protobuf 3), so absent and 0 are the same setting.
    p = p or {}
    return {k: p[k] for k in ("Parallelism", "Delay", "FailureAction", "Monitor",
                              "MaxFailureRatio", "Order") if p.get(k)}


def managed(spec: dict[str, Any]) -> dict[str, Any]:
    """The fields the baseline manages, normalised (order, spacing, zero values)."""
    tt = spec.get("TaskTemplate") or {}
    cs = tt.get("ContainerSpec") or {}
    placement = tt.get("Placement") or {}
    mode = spec.get("Mode") or {}
    if "Global" in mode:
        mode_view: dict[str, Any] = {"global": True}
    else:
        mode_view = {"replicas": int(((mode.get("Replicated") or {}).get("Replicas")) or 0)}
    ports = sorted(
        (int(p.get("PublishedPort") or 0), p.get("Protocol") or "tcp",
         int(p.get("TargetPort") or 0), p.get("PublishMode") or "ingress")
        for p in ((spec.get("EndpointSpec") or {}).get("Ports") or []))
    mounts = sorted(
        (m.get("Target", ""), m.get("Type", "volume"), m.get("Source", ""),
         bool(m.get("ReadOnly")))
        for m in (cs.get("Mounts") or []))
    labels = spec.get("Labels") or {}
    return {
        "owned": labels.get(OWNER_LABEL) == OWNER_VALUE,
        "image": cs.get("Image", ""),
        "args": list(cs.get("Args") or []),
        "env": sorted(cs.get("Env") or []),
        "mounts": [list(m) for m in mounts],
        "constraints": sorted(_canonical_constraint(c) for c in placement.get("Constraints")
                              or []),
        "max_replicas": int(placement.get("MaxReplicas") or 0),
        "mode": mode_view,
        "update": _policy_view(spec.get("UpdateConfig")),
        "rollback": _policy_view(spec.get("RollbackConfig")),
        "ports": [list(p) for p in ports],
    }


def task_view(spec: dict[str, Any]) -> dict[str, Any]:
    """The managed fields that make up a task (what a rolled-back update had tried)."""
    view = managed(spec)
    return {k: view[k] for k in ("image", "args", "env", "mounts", "constraints")}


def spec_hash(spec: dict[str, Any]) -> str:
    text = json.dumps(managed(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_FIELD_NAMES = {"owned": "ownership label", "image": "image", "args": "command",
                "env": "environment", "mounts": "volumes", "constraints": "constraints",
                "max_replicas": "max replicas per node", "mode": "mode", "update": "update_config",
                "rollback": "rollback_config", "ports": "ports"}


def diff(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """Human-readable changes from the current spec to the desired one ([] = in sync)."""
    a, b = managed(current), managed(desired)
    changes = []
    for key in a:
        if a[key] == b[key]:
            continue
        if key == "image":
            changes.append(f"image {a[key] or '-'} -> {b[key]}")
        elif key == "mode" and "replicas" in a[key] and "replicas" in b[key]:
            changes.append(f"replicas {a[key]['replicas']} -> {b[key]['replicas']}")
        elif key == "mode":
            changes.append(f"mode {_mode_text(a[key])} -> {_mode_text(b[key])}")
        elif key == "ports":
            changes.append("ports " + _ports_text(a[key]) + " -> " + _ports_text(b[key]))
        else:
            changes.append(f"{_FIELD_NAMES[key]} changed")
    return changes


def _mode_text(mode: dict[str, Any]) -> str:
    return "global" if mode.get("global") else f"replicated ({mode.get('replicas', 0)})"


def _ports_text(ports: list[list[Any]]) -> str:
    return ",".join(f"{p[0]}:{p[2]}/{p[1]}({p[3]})" for p in ports) or "none"


def merge(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The current spec with the desired spec's managed fields written over it."""
    new = copy.deepcopy(current)
    new["Labels"] = {**(new.get("Labels") or {}), **desired["Labels"]}
    tt = new.setdefault("TaskTemplate", {})
    cs = tt.setdefault("ContainerSpec", {})
    want_cs = desired["TaskTemplate"]["ContainerSpec"]
    for key in ("Image", "Args", "Env", "Mounts"):
        if key in want_cs:
            cs[key] = copy.deepcopy(want_cs[key])
        else:
            cs.pop(key, None)
    placement = tt.setdefault("Placement", {})
    want_pl = desired["TaskTemplate"]["Placement"]
    for key in ("Constraints", "MaxReplicas"):
        if want_pl.get(key):
            placement[key] = copy.deepcopy(want_pl[key])
        else:
            placement.pop(key, None)
    new["Mode"] = copy.deepcopy(desired["Mode"])
    new["UpdateConfig"] = copy.deepcopy(desired["UpdateConfig"])
    new["RollbackConfig"] = copy.deepcopy(desired["RollbackConfig"])
    endpoint = new.setdefault("EndpointSpec", {})
    endpoint["Ports"] = copy.deepcopy(desired["EndpointSpec"]["Ports"])
    return new


# ---- what Docker says about a service -----------------------------------------------------

FAILED_STATES = ("failed", "rejected")
ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed")


def rolled_back_from(desired: dict[str, Any], service: dict[str, Any],
                     tasks: list[dict[str, Any]]) -> str:
    """Why applying `desired` is pointless now: Docker already rolled this very spec back.

    Evidence: the service is in a rollback state and one of its failed tasks ran the task
    spec we want. Returns the reason in words, or "" when an update is worth trying.
    """
    status = service.get("UpdateStatus") or {}
    if status.get("State") not in ROLLBACK_STATES:
        return ""
    want = task_view(desired)
    if task_view(service.get("Spec") or {}) == want:
        # The rollback was of something else (a replica count, or a task that the
        # swarm itself stopped mid-update): the change we want now is worth trying.
        return ""
    for task in sorted(tasks, key=lambda t: t.get("UpdatedAt", ""), reverse=True):
        state = (task.get("Status") or {}).get("State")
        if state not in FAILED_STATES:
            continue
        if task_view({"TaskTemplate": task.get("Spec") or {}}) == want:
            err = (task.get("Status") or {}).get("Err") or state
            return (f"Docker rolled back the update to {want['image']}: "
                    f"{status.get('Message') or status.get('State')}; a task failed with: "
                    f"{err}. Fix the file and apply again (or apply with force to retry).")
    return ""


def last_task_error(tasks: list[dict[str, Any]]) -> tuple[str, float | None]:
    """The newest failed or rejected task's error, in words ('' if none), and when."""
    failed = [t for t in tasks if (t.get("Status") or {}).get("State") in FAILED_STATES]
    if not failed:
        return "", None
    task = max(failed, key=lambda t: t.get("UpdatedAt", ""))
    status = task.get("Status") or {}
    image = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image", "")
    return (f"{status.get('State')}: {status.get('Err') or status.get('Message', '')} "
            f"({image})", docker_time(task.get("UpdatedAt", "")))
