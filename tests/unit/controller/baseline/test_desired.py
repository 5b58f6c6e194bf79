"""Resolving a baseline service against the nodes, and normalising / comparing specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.baseline.desired import (
    HASH_LABEL,
    OWNER_LABEL,
    NodeView,
    build,
    diff,
    managed,
    matches,
    merge,
    node_view,
    rolled_back_from,
    shape,
    spec_hash,
)
from controller.baseline.spec import ServiceDef, parse_baseline, parse_constraint

from .fakedocker import as_docker_returns, node

VIZ = """
services:
  viz:
    image:
      armv6l: viz-arm
      armv7l: viz-arm
      aarch64: viz
      x86_64: viz
    ports: ["8080:8080"]
    deploy:
      mode: global
      placement: {constraints: [node.role==manager]}
"""


def one(text: str) -> ServiceDef:
    return parse_baseline(text).services[0]


def view(hostname: str, role: str = "worker", state: str = "ready",
         availability: str = "active", arch: str = "x86_64", **labels: str) -> NodeView:
    return node_view(node(hostname, role, state, availability, arch, labels))


def test_node_view_reads_docker_attrs() -> None:
    v = node_view(node("PiLike-01", "manager", arch="armv6l", labels={"zone": "a"},
                       leader=True))
    assert (v.hostname, v.role, v.state, v.availability, v.arch, v.leader) == (
        "PiLike-01", "manager", "ready", "active", "armv6l", True)
    assert v.labels == (("zone", "a"),) and v.schedulable
    assert not view("x", state="down").schedulable
    assert not view("x", availability="drain").schedulable
    assert not view("x", availability="pause").schedulable


@pytest.mark.parametrize(("constraint", "expected"), [
    ("node.role==worker", True), ("node.role==manager", False), ("node.role!=manager", True),
    ("node.hostname==PI-1", True), ("node.hostname!=pi-1", False),
    ("node.id==id-pi-1", True),
    ("node.platform.arch==x86_64", True), ("node.platform.arch==amd64", True),
    ("node.platform.arch==arm64", False), ("node.platform.os==linux", True),
    ("node.labels.zone==rack-1", True), ("node.labels.zone!=rack-1", False),
    ("node.labels.ZONE==rack-1", False),  # label names keep their case, as in Swarm
    ("node.labels.missing!=x", True), ("node.labels.missing==x", False),
    ("engine.labels.disk==ssd", False),
])
def test_constraints_match_as_swarm_does(constraint: str, expected: bool) -> None:
    assert matches(parse_constraint(constraint), view("pi-1", zone="rack-1")) is expected


def test_one_per_manager_is_global_and_leaves_the_count_to_swarm() -> None:
    """No replica count that would have to follow joins and promotions: the spec does not
    change when managers come and go; only the eligible list (what status shows) does."""
    nodes = [view("m1", "manager"), view("m2", "manager"), view("m3", "manager", state="down"),
             view("m4", "manager", availability="drain"), view("w1"), view("w2")]
    desired = build(one(VIZ), nodes)
    assert desired.replicas is None
    assert desired.spec["Mode"] == {"Global": {}}
    assert desired.spec["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==manager"]}
    assert desired.eligible == ["m1", "m2"]
    more = build(one(VIZ), [*nodes, view("m5", "manager")])
    assert more.spec == desired.spec and more.eligible == ["m1", "m2", "m5"]


def test_the_old_workers_keyword_builds_the_same_spec_as_global() -> None:
    old = one("services:\n  web:\n    image: w\n    deploy:\n      replicas: workers\n"
              "      placement: {constraints: [node.labels.zone==a]}\n")
    new = one("services:\n  web:\n    image: w\n    deploy:\n      mode: global\n"
              "      placement: {constraints: [node.labels.zone==a, node.role==worker]}\n")
    nodes = [view("m1", "manager", zone="a"), view("w1", zone="a"), view("w2", zone="a"),
             view("w3", zone="b"), view("w4", state="down", zone="a")]
    assert build(old, nodes).spec == build(new, nodes).spec
    assert build(old, nodes).eligible == ["w1", "w2"]


def test_max_replicas_per_node() -> None:
    svc = one("services:\n  web:\n    image: w\n    deploy:\n      replicas: 4\n"
              "      placement: {max_replicas_per_node: 1}\n")
    desired = build(svc, [view("w1"), view("w2")])
    assert desired.spec["Mode"] == {"Replicated": {"Replicas": 4}}
    assert desired.spec["TaskTemplate"]["Placement"]["MaxReplicas"] == 1


def test_a_number_is_a_number_and_global_is_global() -> None:
    nodes = [view("m1", "manager"), view("w1")]
    fixed = build(one("services:\n  web:\n    image: w\n    deploy: {replicas: 15}\n"), nodes)
    assert fixed.replicas == 15 and "MaxReplicas" not in fixed.spec["TaskTemplate"]["Placement"]
    glob = build(one("services:\n  web:\n    image: w\n    deploy: {mode: global}\n"), nodes)
    assert glob.replicas is None and glob.spec["Mode"] == {"Global": {}}


def test_image_for_the_architecture_the_placement_selects() -> None:
    arm_managers = [view("m1", "manager", arch="armv6l"), view("m2", "manager", arch="armv7l"),
                    view("w1", arch="x86_64"), view("w2", arch="x86_64"),
                    view("w3", arch="x86_64")]
    desired = build(one(VIZ), arm_managers)
    assert desired.image == "viz-arm"  # workers are x86_64, but viz never runs there
    assert desired.excluded == [] and desired.warnings == []
    x86 = build(one(VIZ), [view("m1", "manager", arch="x86_64")])
    assert x86.image == "viz"
    assert x86.spec["TaskTemplate"]["ContainerSpec"]["Image"] == "viz"


def test_mixed_architectures_majority_wins_and_the_rest_is_left_out() -> None:
    nodes = [view("m1", "manager", arch="armv7l"), view("m2", "manager", arch="aarch64"),
             view("m3", "manager", arch="armv6l")]
    desired = build(one(VIZ), nodes)
    assert desired.image == "viz-arm"
    assert desired.eligible == ["m1", "m3"]
    assert desired.excluded == ["m2"]
    assert desired.spec["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.role==manager", "node.id!=id-m2"]
    assert "m2 (aarch64)" in desired.warnings[0]


def test_mixed_tie_goes_to_the_file_order() -> None:
    nodes = [view("m1", "manager", arch="armv7l"), view("m2", "manager", arch="aarch64")]
    assert build(one(VIZ), nodes).image == "viz-arm"  # armv6l/armv7l come first in VIZ


def test_a_down_node_of_another_arch_is_still_kept_out() -> None:
    nodes = [view("m1", "manager", arch="armv7l"), view("m2", "manager", arch="armv7l"),
             view("m3", "manager", arch="aarch64", state="down")]
    desired = build(one(VIZ), nodes)
    assert desired.image == "viz-arm" and desired.excluded == ["m3"]


def test_just_after_an_election_the_nodes_architectures_still_choose_the_image() -> None:
    """Every node is `unknown` until it reports to the new leader: viz went to the file's
    first image (the ARM one, on x86_64 managers) and back 9 s later."""
    nodes = [view("m1", "manager", arch="x86_64", state="unknown"),
             view("m2", "manager", arch="x86_64", state="unknown"),
             view("m3", "manager", arch="x86_64", state="down")]
    desired = build(one(VIZ), nodes)
    assert desired.image == "viz" and desired.excluded == []
    # some have reported to the new leader, the others not yet: the same image as before
    mixed = [view("m1", "manager", arch="x86_64"), view("m2", "manager", arch="x86_64"),
             view("m3", "manager", arch="armv7l")]
    before = build(one(VIZ), mixed)
    for reported in ([], ["m3"]):
        now = [view(n.hostname, "manager", arch=n.arch,
                    state="ready" if n.hostname in reported else "unknown") for n in mixed]
        assert (build(one(VIZ), now).image, build(one(VIZ), now).excluded) == \
            (before.image, before.excluded) == ("viz", ["m3"])
    # long-Down managers of another architecture do not vote, then or now
    for state in ("ready", "unknown"):
        down_arm = [view("m1", "manager", arch="x86_64", state=state),
                    *(view(f"m{i}", "manager", arch="armv7l", state="down") for i in (2, 3))]
        assert build(one(VIZ), down_arm).image == "viz"


def test_no_image_for_an_arch_without_default_excludes_it() -> None:
    svc = one("services:\n  web:\n    image: {aarch64: w64}\n    deploy: {mode: global}\n")
    desired = build(svc, [view("a", arch="aarch64"), view("b", arch="armv6l")])
    assert desired.image == "w64" and desired.excluded == ["b"]
    none = build(svc, [view("b", arch="armv6l")])
    assert none.image == "w64" and "no Ready, Active node" in " ".join(none.warnings)


def test_docker_shaped_spec_equals_desired() -> None:
    svc = one("""
services:
  web:
    image: w:1
    command: [serve]
    environment: {B: "2", A: "1"}
    ports: ["80:80", {target: 53, published: 53, protocol: udp, mode: host}]
    volumes: ["/a:/a:ro", "/b:/b"]
    deploy:
      replicas: 0
      placement: {constraints: [node.role==worker, node.labels.x!=y]}
      update_config: {delay: 0s, parallelism: 0}
""")
    desired = build(svc, [view("w1")])
    returned = as_docker_returns(desired.spec)
    assert returned != desired.spec  # zero values gone, defaults added, lists reordered
    assert diff(returned, desired.spec) == []
    assert managed(returned) == managed(desired.spec)
    assert spec_hash(returned) == desired.hash


def test_hash_follows_the_managed_fields_only() -> None:
    nodes = [view("m1", "manager")]
    desired = build(one(VIZ), nodes)
    assert desired.spec["Labels"][HASH_LABEL] == desired.hash
    relabelled = copy.deepcopy(desired.spec)
    relabelled["Labels"][HASH_LABEL] = "something else"
    relabelled["Labels"]["added.by.hand"] = "x"
    assert spec_hash(relabelled) == desired.hash
    other = build(one(VIZ.replace("viz\n", "viz:2\n")), nodes)
    assert other.hash != desired.hash


def _changed(spec: dict[str, Any], **edits: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    cs = spec["TaskTemplate"]["ContainerSpec"]
    if "image" in edits:
        cs["Image"] = edits["image"]
    if "replicas" in edits:
        spec["Mode"] = {"Replicated": {"Replicas": edits["replicas"]}}
    if "env" in edits:
        cs["Env"] = edits["env"]
    if "ports" in edits:
        spec["EndpointSpec"]["Ports"] = edits["ports"]
    if "constraints" in edits:
        spec["TaskTemplate"]["Placement"]["Constraints"] = edits["constraints"]
    if "failure_action" in edits:
        spec["UpdateConfig"]["FailureAction"] = edits["failure_action"]
    if "owner" in edits:
        spec["Labels"].pop(OWNER_LABEL)
    return spec


@pytest.mark.parametrize(("edits", "change"), [
    ({"image": "viz:old"}, "image viz:old -> viz"),
    ({"replicas": 3}, "mode replicated (3) -> global"),
    ({"env": ["X=1"]}, "environment changed"),
    ({"ports": []}, "ports none -> 8080:8080/tcp(ingress)"),
    ({"ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080,
                 "PublishMode": "host"}]},
     "ports 8080:8080/tcp(host) -> 8080:8080/tcp(ingress)"),
    ({"constraints": []}, "constraints changed"),
    ({"failure_action": "pause"}, "update_config changed"),
    ({"owner": True}, "ownership label changed"),
])
def test_diff_names_each_drift(edits: dict[str, Any], change: str) -> None:
    desired = build(one(VIZ), [view("m1", "manager")])
    current = as_docker_returns(_changed(desired.spec, **edits))
    assert diff(current, desired.spec) == [change]


def test_diff_names_a_replica_count_change() -> None:
    desired = build(one("services:\n  web:\n    image: w\n    deploy: {replicas: 2}\n"), [])
    current = as_docker_returns(_changed(desired.spec, replicas=3))
    assert diff(current, desired.spec) == ["replicas 3 -> 2"]


def test_merge_keeps_what_the_baseline_does_not_manage() -> None:
    svc = one("services:\n  web:\n    image: w:2\n")
    desired = build(svc, [view("w1")])
    current = as_docker_returns(_changed(desired.spec, image="w:1", env=["OLD=1"]))
    current["TaskTemplate"]["Networks"] = [{"Target": "net1"}]
    current["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 1 << 20}}
    current["TaskTemplate"]["Placement"]["Constraints"] = ["node.role==worker"]
    current["Labels"]["by.hand"] = "kept"
    merged = merge(current, desired.spec)
    assert diff(merged, desired.spec) == []
    tt = merged["TaskTemplate"]
    assert tt["Networks"] == [{"Target": "net1"}]
    assert tt["Resources"] == {"Limits": {"MemoryBytes": 1 << 20}}
    assert tt["ContainerSpec"]["Isolation"] == "default"
    assert "Env" not in tt["ContainerSpec"]  # managed: removed from the file, so removed
    assert "Constraints" not in tt["Placement"]
    assert merged["Labels"]["by.hand"] == "kept"
    assert merged["Labels"][HASH_LABEL] == desired.hash
    assert current["TaskTemplate"]["ContainerSpec"]["Env"] == ["OLD=1"]  # not mutated


def test_shape_changes_with_what_placement_depends_on() -> None:
    nodes = [view("m1", "manager"), view("w1")]
    before = shape(nodes)
    assert shape(list(reversed(nodes))) == before
    assert shape([view("m1", "manager"), view("w1", state="down")]) != before
    assert shape([view("m1", "manager"), view("w1", availability="drain")]) != before
    assert shape([view("m1", "manager"), view("w1", "manager")]) != before
    assert shape([view("m1", "manager"), view("w1", zone="a")]) != before
    assert shape(nodes[:1]) != before


def _service(desired_spec: dict[str, Any], state: str) -> dict[str, Any]:
    return {"Spec": as_docker_returns(desired_spec),
            "UpdateStatus": {"State": state, "Message": "update rolled back due to failure"}}


def test_rolled_back_from_the_very_spec_we_want() -> None:
    good = build(one("services:\n  web:\n    image: w:1\n"), [view("w1")])
    bad = build(one("services:\n  web:\n    image: w:broken\n"), [view("w1")])
    failed = {"Status": {"State": "rejected", "Err": "No such image: w:broken"},
              "Spec": bad.spec["TaskTemplate"], "UpdatedAt": "2026-01-01T00:00:02Z"}
    ok = {"Status": {"State": "running"}, "Spec": good.spec["TaskTemplate"],
          "UpdatedAt": "2026-01-01T00:00:03Z"}
    service = _service(good.spec, "rollback_completed")
    reason = rolled_back_from(bad.spec, service, [failed, ok])
    assert "rolled back" in reason and "No such image: w:broken" in reason
    assert "w:broken" in reason
    # not in a rollback state: an update is worth trying
    assert rolled_back_from(bad.spec, _service(good.spec, "completed"), [failed, ok]) == ""
    # the failed task ran something else than what we want now
    other = build(one("services:\n  web:\n    image: w:3\n"), [view("w1")])
    assert rolled_back_from(other.spec, service, [failed, ok]) == ""


def test_after_a_rollback_a_replica_change_is_still_applied() -> None:
    """A rollback caused by something else (the swarm stopping a task mid-update when a
    node was promoted) must not freeze the replica count: only the task spec that was
    rolled back is held."""
    seven = build(one("services:\n  web:\n    image: w:1\n"), [view(f"w{i}") for i in range(7)])
    six = build(one("services:\n  web:\n    image: w:1\n"), [view(f"w{i}") for i in range(6)])
    stopped = {"Status": {"State": "failed", "Err": "task: non-zero exit (137)"},
               "Spec": seven.spec["TaskTemplate"], "UpdatedAt": "2026-01-01T00:00:02Z"}
    service = _service(seven.spec, "rollback_completed")
    assert rolled_back_from(six.spec, service, [stopped]) == ""
