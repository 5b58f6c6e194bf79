"""The controller's view of the swarm, through the local manager's Docker API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.dockerapi import (
    APIError,
    DockerAPI,
    DockerError,
    NotFound,
    docker_time,
    no_leader,
)

log = logging.getLogger(__name__)

SWARM_PORT = 2377
WARN_EVERY = 60.0  # seconds between two warnings that the local daemon does not answer


class SwarmError(Exception):
    """The swarm cannot do what was asked; the message says why in plain words."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class JoinFacts:
    """What every grant carries. Cached briefly: reading it costs three Docker calls, and
    a fleet powering up asks for it hundreds of times a second."""

    cluster_id: str
    worker_token: str = field(repr=False)
    managers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LocalNode:
    node_id: str
    hostname: str
    cluster_id: str
    addr: str


def init_swarm(api: DockerAPI, advertise_addr: str) -> str:
    """`docker swarm init` unless this daemon already manages a swarm; returns the swarm id."""
    info = api.info()["Swarm"]
    if info.get("LocalNodeState") == "active":
        if not info.get("ControlAvailable"):
            raise SwarmError("not_a_manager", "this Docker daemon is a swarm worker; run "
                             "enroll-controller on a manager")
    else:
        api.init_swarm(advertise_addr, f"0.0.0.0:{SWARM_PORT}")
    return api.inspect_swarm()["ID"]


class Swarm:
    """The few swarm operations enrollment needs, with Docker's errors made plain."""

    def __init__(self, api: DockerAPI, facts_ttl: float = 5.0) -> None:
        self.api = api
        self.facts_ttl = facts_ttl
        self._facts: tuple[float, JoinFacts] | None = None
        self._facts_lock = threading.Lock()

    def join_facts(self) -> JoinFacts:
        """Cluster id, worker token and manager addresses, at most `facts_ttl` seconds old;
        forgotten at once when the token rotates or the managers change."""
        with self._facts_lock:
            if self._facts and time.monotonic() - self._facts[0] < self.facts_ttl:
                return self._facts[1]
            local = self.local()
            own = f"{local.addr}:{SWARM_PORT}"
            facts = JoinFacts(local.cluster_id, self.worker_token(),
                              self.manager_addresses(first=own) or [own])
            self._facts = (time.monotonic(), facts)
            return facts

    def _forget_facts(self) -> None:
        with self._facts_lock:
            self._facts = None

    def local(self) -> LocalNode:
        """This manager; SwarmError not_a_manager only when the daemon says so (outside
        any swarm, or a worker), swarm_not_ready while it cannot say (pending, locked,
        error: a manager restarting is pending until it reaches a Raft leader)."""
        info = self._call("reading the local daemon", self.api.info)
        swarm = info["Swarm"]
        state = swarm.get("LocalNodeState")
        if state not in ("active", "inactive"):
            raise SwarmError("swarm_not_ready", f"the local Docker daemon's swarm membership "
                             f"is {str(state)[:20]!r} for now; try again shortly", 503)
        if state != "active" or not swarm.get("ControlAvailable"):
            raise _not_a_manager()
        return LocalNode(swarm["NodeID"], info["Name"], swarm["Cluster"]["ID"],
                         swarm.get("NodeAddr", ""))

    def worker_token(self) -> str:
        return self._swarm()["JoinTokens"]["Worker"]

    def manager_token(self) -> str:
        """Only ever read by managers' controllers, to seal and open the shared CA key."""
        return self._swarm()["JoinTokens"]["Manager"]

    def _swarm(self) -> dict[str, Any]:
        swarm = self._call("reading the swarm", self.api.inspect_swarm)
        if swarm is None:
            raise _not_a_manager()
        return swarm  # type: ignore[no-any-return]

    def is_manager(self) -> bool:
        """False only when the daemon says it is no manager; SwarmError when it cannot say
        (down, restarting): a manager's keys must never go for want of an answer."""
        try:
            self.local()
        except SwarmError as exc:
            if exc.code == "not_a_manager":
                return False
            raise
        return True

    def manager_addresses(self, first: str = "") -> list[str]:
        """Where a Pi can join: managers reachable and not Down, `first` (this manager's
        own address, certainly alive) in front. A manager that just died still shows as
        reachable for a few seconds; one that is Down is never named."""
        addrs = []
        for node in self._call("listing managers", self.api.nodes,
                               filters={"role": "manager"}) or []:
            status = node.get("ManagerStatus") or {}
            if (status.get("Reachability") == "reachable" and status.get("Addr")
                    and (node.get("Status") or {}).get("State") != "down"):
                addrs.append(status["Addr"])
        return sorted(addrs, key=lambda a: (a != first, a))

    def node(self, node_id: str) -> dict[str, Any] | None:
        return self._call("reading node", self.api.inspect_node, node_id)  # type: ignore[no-any-return]

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("listing nodes", self.api.nodes) or []

    def wait_ready(self, node_id: str, hostname: str, timeout: float = 20.0) -> dict[str, Any]:
        """The node, once Docker itself says it is Ready under this hostname."""
        deadline = time.monotonic() + timeout
        while True:
            attrs = self.node(node_id)
            if attrs is None:
                raise SwarmError("node_not_in_swarm",
                                 f"node {node_id} is not a member of this swarm")
            name = attrs.get("Description", {}).get("Hostname", "")
            if name and name.lower() != hostname.lower():
                raise SwarmError("hostname_mismatch",
                                 f"swarm node {node_id} is named {name!r}, not {hostname!r}")
            if name and attrs["Status"]["State"] == "ready":
                return attrs
            if time.monotonic() > deadline:
                raise SwarmError("node_not_ready", f"node {node_id} is not Ready yet; retry", 409)
            time.sleep(0.5)

    def finish_join(self, node_id: str, role: str, labels: dict[str, str],
                    availability: str) -> None:
        """Labels, availability and (for managers) promotion, in one spec update."""
        def change(attrs: dict[str, Any]) -> dict[str, Any]:
            spec = dict(attrs["Spec"])
            spec["Labels"] = {**spec.get("Labels", {}), **labels}
            return {**spec, "Availability": availability, "Role": role}
        self.update_node(node_id, change)

    def update_node(self, node_id: str,
                    change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Write `change(node)` as the node's spec under the version it was read at (a
        compare-and-swap), reading it again on "update out of sequence". `change` returns
        None to write nothing (the node no longer is what the caller expected): False."""
        for _ in range(5):
            node = self._call("reading node", self.api.inspect_node, node_id)
            if node is None:
                raise SwarmError("node_not_in_swarm",
                                 f"node {node_id} is not a member of this swarm")
            spec = change(node)
            if spec is None:
                return False
            try:
                self.api.update_node(node_id, node["Version"]["Index"], spec)
            except DockerError as exc:
                raise _down(f"updating node {node_id}", exc) from None
            except APIError as exc:
                if "update out of sequence" in str(exc):
                    continue
                if no_leader(exc):
                    raise self._quorum_lost() from None
                raise SwarmError("swarm_update_failed",
                                 f"could not update node {node_id}: {exc.explanation}",
                                 502) from None
            if spec.get("Role") != node["Spec"].get("Role"):
                self._forget_facts()  # the manager addresses in grants
            return True
        raise SwarmError("swarm_update_failed", f"node {node_id} kept changing; retry", 503)

    # -- removing nodes without breaking the swarm: drain, demote, remove, rotate --

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Docker's errors as SwarmError: no quorum, the daemon down (restarting, say), or
        an error answer in Docker's own words. None for 404."""
        try:
            return fn(*args, **kwargs)
        except NotFound:
            return None
        except APIError as exc:
            if no_leader(exc):
                raise self._quorum_lost() from None
            raise SwarmError("swarm_update_failed", f"{what}: {exc.explanation}", 502) from None
        except DockerError as exc:
            raise _down(what, exc) from None

    def _quorum_lost(self) -> SwarmError:
        """The no-quorum error, with the swarm's manager count from the local daemon."""
        try:
            return quorum_lost(int(self.api.info()["Swarm"].get("Managers") or 0))
        except (APIError, DockerError) as exc:
            return _down("reading the local daemon", exc)

    def nodes_named(self, hostname: str) -> list[dict[str, Any]]:
        return [a for a in self.nodes()
                if a.get("Description", {}).get("Hostname", "").lower() == hostname.lower()]

    def managers(self) -> tuple[int, int]:
        """(managers, reachable managers)."""
        nodes = self._call("listing managers", self.api.nodes, filters={"role": "manager"}) or []
        reachable = sum(1 for n in nodes
                        if (n.get("ManagerStatus") or {}).get("Reachability") == "reachable")
        return len(nodes), reachable

    def check_can_remove_manager(self) -> None:
        """Refuse when demoting one more manager would leave the rest without a quorum."""
        total, reachable = self.managers()
        needed = total // 2 + 1
        if reachable < needed:
            raise quorum_lost(total, reachable)
        if total - 1 < 1:
            raise SwarmError("last_manager", "this is the swarm's last manager; it cannot be "
                             "removed", 409)

    def remove(self, attrs: dict[str, Any], force: bool = True) -> None:
        """Remove a node, demoting it first if it is a manager (with a quorum check)."""
        node_id = attrs["ID"]
        if attrs["Spec"].get("Role") == "manager":
            self.check_can_remove_manager()
            node = self._call("reading node", self.api.inspect_node, node_id)
            if node is not None:
                self._call(f"demoting {node_id}", self.api.update_node, node_id,
                           node["Version"]["Index"], dict(node["Spec"], Role="worker"))
        if self._call("reading node", self.api.inspect_node, node_id) is not None:
            self._call(f"removing {node_id}", self.api.remove_node, node_id, force=force)
        self._forget_facts()

    def drain(self, node_id: str) -> None:
        node = self._call("reading node", self.api.inspect_node, node_id)
        if node is not None:
            self._call(f"draining {node_id}", self.api.update_node, node_id,
                       node["Version"]["Index"], dict(node["Spec"], Availability="drain"))

    def services_on(self, node_id: str) -> set[str]:
        tasks = self._call("listing tasks", self.api.tasks,
                           filters={"node": node_id, "desired-state": "running"}) or []
        return {t["ServiceID"] for t in tasks}

    def tasks_moved(self, node_id: str, services: set[str]) -> bool:
        """Nothing runs on the node any more, and those services' tasks all run elsewhere."""
        if self.services_on(node_id):
            return False
        for service in services:
            spec = self._call("reading service", self.api.inspect_service, service)
            replicas = ((spec or {}).get("Spec", {}).get("Mode", {}).get("Replicated") or {})
            if "Replicas" not in replicas:
                continue  # removed meanwhile, or global: nothing moves for those
            tasks = self._call("listing tasks", self.api.tasks,
                               filters={"service": service, "desired-state": "running"}) or []
            if sum(t["Status"]["State"] == "running" for t in tasks) < replicas["Replicas"]:
                return False
        return True

    def rotate_worker_token(self) -> None:
        swarm = self._swarm()
        self._call("rotating the worker join token", self.api.update_swarm,
                   swarm["Version"]["Index"], swarm["Spec"], rotate_worker_token=True)
        self._forget_facts()


_warned = [-WARN_EVERY]  # when _down last logged


def _down(what: str, exc: Exception) -> SwarmError:
    """The answer names no address (it reaches agents); the log says what failed, at most
    once every WARN_EVERY seconds (each request of a stranger may come here)."""
    if time.monotonic() - _warned[0] > WARN_EVERY:
        _warned[0] = time.monotonic()
        log.warning("%s: the local Docker daemon does not answer (%s)", what, exc)
    return SwarmError("docker_unavailable", f"{what}: the local Docker daemon does not "
                      "answer; is it running?", 503)


def _not_a_manager() -> SwarmError:
    return SwarmError("not_a_manager", "the local Docker daemon is not a swarm manager", 503)


def quorum_lost(total: int, reachable: int | None = None) -> SwarmError:
    """The plain-words explanation of a lost Raft quorum, and what the admin can do."""
    needed = total // 2 + 1
    seen = f"{reachable} of {total}" if reachable is not None else f"fewer than {needed} of {total}"
    return SwarmError("quorum_lost", (
        f"the swarm has lost its Raft quorum: {seen} managers are reachable and {total} "
        f"managers need {needed}, so no node can be demoted, removed or added safely. Bring "
        "the dead manager back if you can. If it is gone for good, run 'docker swarm init "
        "--force-new-cluster --advertise-addr <its LAN IP>' on a surviving manager, then "
        "approve again. Two managers tolerate no failure: run one, three or five."), 409)


def down_for(attrs: dict[str, Any]) -> float:
    """Seconds since a Down node's status last changed (Docker keeps no 'down since')."""
    when = docker_time(attrs.get("UpdatedAt", ""))
    return 0.0 if when is None else time.time() - when
