"""Cluster health: Raft fault tolerance in numbers and words, nodes, leader, tasks."""

from __future__ import annotations

import pytest

from controller.baseline.health import cluster_health, fault_tolerance

from .fakedocker import FakeDockerAPI, node


@pytest.mark.parametrize(("managers", "quorum", "tolerates"), [
    (1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (6, 4, 2), (7, 4, 3),
])
def test_quorum_arithmetic(managers: int, quorum: int, tolerates: int) -> None:
    raft = fault_tolerance(managers)
    assert (raft["quorum"], raft["fault_tolerance"]) == (quorum, tolerates)
    assert raft["odd"] is (managers % 2 == 1) and raft["has_quorum"]


def test_two_managers_tolerate_zero_failures_and_we_say_so() -> None:
    raft = fault_tolerance(2)
    assert "tolerates zero manager failures" in raft["summary"]
    assert "odd number of managers" in raft["recommendation"]
    assert "to 3" in raft["recommendation"]


def test_words_for_other_counts() -> None:
    assert "zero failures" in fault_tolerance(1)["summary"]
    assert "3 managers tolerate 1" in fault_tolerance(1)["recommendation"]
    assert "tolerates 1 manager failure" in fault_tolerance(3)["summary"]
    assert fault_tolerance(3)["recommendation"] == "an odd number of managers: good"
    four = fault_tolerance(4)
    assert "no more than 3 managers would" in four["summary"]
    assert "odd number" in four["recommendation"]
    assert "at most 7" in fault_tolerance(9)["recommendation"]
    assert "not a working swarm" in fault_tolerance(0)["summary"]


def test_unreachable_managers() -> None:
    holding = fault_tolerance(3, reachable=2)
    assert holding["has_quorum"] and "1 of 3 unreachable now: quorum holds, 0 more" in \
        holding["summary"]
    lost = fault_tolerance(3, reachable=1)
    assert not lost["has_quorum"] and "QUORUM IS LOST" in lost["summary"]


def test_cluster_health_from_docker() -> None:
    api = FakeDockerAPI([
        node("mgr-1", "manager", leader=True), node("mgr-2", "manager", state="down",
                                                    reachability="unreachable"),
        node("pi-1"), node("pi-2", availability="drain"), node("pi-3", state="down")])
    api.add_service({"Name": "web", "Labels": {"swarm-enroll.baseline": "true"},
                     "TaskTemplate": {"ContainerSpec": {"Image": "w"}},
                     "Mode": {"Replicated": {"Replicas": 3}}})
    api.add_service({"Name": "agent", "TaskTemplate": {"ContainerSpec": {"Image": "a"}},
                     "Mode": {"Global": {}}})
    api.run_tasks("web", ["pi-1", "mgr-1"])
    api.run_tasks("web", ["pi-1"], state="failed")
    api.run_tasks("agent", ["pi-1", "mgr-1"])
    health = cluster_health(api.nodes(), api.services(), api.tasks())
    managers, workers = health["managers"], health["workers"]
    assert managers["total"] == 2 and managers["by_state"] == {"ready": 1, "down": 1}
    assert workers["by_state"] == {"ready": 2, "down": 1}
    assert workers["by_availability"] == {"active": 2, "drain": 1}
    assert [n["hostname"] for n in workers["nodes"]] == ["pi-1", "pi-2", "pi-3"]
    assert health["leader"]["hostname"] == "mgr-1"
    assert health["raft"]["reachable"] == 1 and not health["raft"]["has_quorum"]
    services = {s["name"]: s for s in health["services"]}
    assert services["web"] == {"name": "web", "mode": "replicated", "desired": 3,
                               "running": 2, "baseline": True}
    assert services["agent"] == {"name": "agent", "mode": "global", "desired": 2,
                                 "running": 2, "baseline": False}
