"""The stuck-task finder: a pending task is stuck only when a node really has room."""

from __future__ import annotations

import time
from typing import Any

from controller.baseline.desired import node_view
from controller.baseline.watchdog import find_stuck

from .fakedocker import node

NOW = 1_800_000_000.0


def service(sid: str, name: str, constraints: list[str] | None = None, max_per_node: int = 0,
            host_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    placement: dict[str, Any] = {"Constraints": constraints or []}
    if max_per_node:
        placement["MaxReplicas"] = max_per_node
    return {"ID": sid, "Spec": {
        "Name": name, "TaskTemplate": {"Placement": placement},
        "EndpointSpec": {"Ports": [{"PublishedPort": p, "TargetPort": p, "Protocol": "tcp",
                                    "PublishMode": "host"} for p in host_ports]}}}


def task(sid: str, node_id: str = "", state: str = "running", age: float = 0.0,
         desired: str = "running") -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - age)) + ".250000000Z"
    return {"ID": f"t-{sid}-{node_id or 'none'}-{state}", "ServiceID": sid, "NodeID": node_id,
            "DesiredState": desired, "Status": {"State": state, "Timestamp": stamp}}


NODES = [node_view(node("m1", "manager")), node_view(node("w1")), node_view(node("w2")),
         node_view(node("w3", state="down")), node_view(node("w4", availability="drain"))]


def stuck(services: list[dict[str, Any]], tasks: list[dict[str, Any]],
          watch: set[str] | None = None, nodes: Any = None) -> dict[str, list[str]]:
    found = find_stuck(services, watch or {s["Spec"]["Name"] for s in services}, tasks,
                       NODES if nodes is None else nodes, NOW)
    return {s.service: s.room_on for s in found}


def test_the_issue_9_case_one_per_worker_on_host_ports() -> None:
    """Six of seven workers run nginx; the seventh is free; a task waits in vain."""
    nginx = service("s1", "nginx", ["node.role==worker"], max_per_node=1, host_ports=(80,))
    tasks = [task("s1", "id-w1"), task("s1", state="pending", age=31)]
    assert stuck([nginx], tasks) == {"nginx": ["w2"]}


def test_young_pending_tasks_are_normal() -> None:
    nginx = service("s1", "nginx", ["node.role==worker"], max_per_node=1)
    assert stuck([nginx], [task("s1", state="pending", age=29)]) == {}


def test_no_room_means_not_stuck() -> None:
    nginx = service("s1", "nginx", ["node.role==worker"], max_per_node=1)
    tasks = [task("s1", "id-w1"), task("s1", "id-w2"), task("s1", state="pending", age=300)]
    assert stuck([nginx], tasks) == {}  # w3 is down, w4 drained, m1 a manager


def test_another_services_host_port_takes_the_room() -> None:
    nginx = service("s1", "nginx", ["node.role==worker"], host_ports=(80,))
    other = service("s2", "web", host_ports=(80,))
    tasks = [task("s2", "id-w1"), task("s1", "id-w2"),
             task("s1", state="pending", age=300)]
    assert stuck([nginx, other], tasks, watch={"nginx"}) == {}
    tasks[0]["DesiredState"] = "shutdown"  # web leaves w1: room there now
    assert stuck([nginx, other], tasks, watch={"nginx"}) == {"nginx": ["w1"]}


def test_global_tasks_only_look_at_their_own_node() -> None:
    viz = service("s1", "viz", ["node.role==manager"], host_ports=(8080,))
    assert stuck([viz], [task("s1", "id-m1", state="pending", age=60)]) == {"viz": ["m1"]}
    other = service("s2", "web", host_ports=(8080,))
    tasks = [task("s1", "id-m1", state="pending", age=60), task("s2", "id-m1")]
    assert stuck([viz, other], tasks, watch={"viz"}) == {}


def test_only_watched_services_and_unreadable_constraints_claim_no_room() -> None:
    mine = service("s1", "mine", ["node.labels.zone==~weird"])
    theirs = service("s2", "theirs")
    tasks = [task("s1", state="pending", age=60), task("s2", state="pending", age=60)]
    assert stuck([mine, theirs], tasks, watch={"theirs"}) == {"theirs": ["m1", "w1", "w2"]}
    bad = service("s3", "bad", ["not a constraint"])
    assert stuck([bad], [task("s3", state="pending", age=60)]) == {}


def test_a_task_without_a_readable_time_is_left_alone() -> None:
    nginx = service("s1", "nginx")
    pending = task("s1", state="pending")
    pending["Status"]["Timestamp"] = "yesterday"
    assert stuck([nginx], [pending]) == {}
