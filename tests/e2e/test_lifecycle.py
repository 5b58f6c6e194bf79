"""Node lifecycle on the simulated cluster: replaced, re-flashed, duplicate, revoked and
stale Pis, a controller killed mid-way, and manager replacement with and without quorum
(with the reference's two managers: the quorum keeper is off here).

The tests share one demo cluster and run in file order: the last one breaks the swarm's
quorum on purpose.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from agent.wire.errors import WireError
from controller.keeper import LABEL as KEEPER_LABEL
from controller.keeper import OFF
from deploy.lab.demo import swarm_nodes, wait_for

from .conftest import Cluster, wait_log

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module", autouse=True)
def two_managers(cluster: Cluster) -> None:
    """These journeys shape the manager set themselves, starting from the reference's two
    Zero W managers: the quorum keeper (tests/e2e/test_keeper.py) is turned off in the
    rules, and the Pi 3 it promoted in the demo is demoted again, by hand."""
    rules = Path(cluster.lab.state()["controller"]["state_dir"]) / "rules.toml"
    rules.write_text(rules.read_text().split("[quorum]")[0])
    wait_for("the keeper off", lambda: cluster.admin.cluster()["keeper"]["waiting"] == OFF, 30)
    client = cluster.lab.docker("PiLike-01")
    node = client.nodes.get(named(cluster, "PiLike-03")[0]["id"])
    labels = {k: v for k, v in node.attrs["Spec"]["Labels"].items() if k != KEEPER_LABEL}
    node.update({**node.attrs["Spec"], "Role": "worker", "Labels": labels})
    wait_for("two managers", lambda: sorted(
        n["hostname"] for n in swarm_nodes(cluster.lab, "PiLike-01") if n["reachability"])
        == ["PiLike-01", "PiLike-02"], 60)


def named(cluster: Cluster, hostname: str) -> list[dict[str, Any]]:
    return [n for n in swarm_nodes(cluster.lab, "PiLike-01") if n["hostname"] == hostname]


def records(cluster: Cluster, hostname: str) -> list[dict[str, Any]]:
    return [n for n in cluster.admin.nodes() if n["hostname"] == hostname and n["id"]]


def unplug_and_wait_down(cluster: Cluster, name: str) -> None:
    cluster.lab.kill_pi(name)
    wait_for(f"{name} Down in the swarm", lambda: all(
        n["state"] == "down" for n in named(cluster, name)), 90)


def joined_once(cluster: Cluster, hostname: str, log_text: str = "") -> dict[str, Any]:
    """The one swarm node of that name, once it is Ready and the only one."""
    def check() -> dict[str, Any] | None:
        nodes = named(cluster, hostname)
        return nodes[0] if len(nodes) == 1 and nodes[0]["state"] == "ready" else None
    return wait_for(f"exactly one Ready {hostname}", check, 90)


def test_replaced_worker_takes_over_the_old_node(cluster: Cluster) -> None:
    old = records(cluster, "PiLike-06")[0]
    unplug_and_wait_down(cluster, "PiLike-06")
    log = cluster.add_pi("PiLike-06", hardware_id="replacement-06")
    request = wait_for("the replacement request", lambda: [
        r for r in records(cluster, "PiLike-06") if r["kind"] == "replacement"
        and r["state"] == "pending"], 60)[0]
    assert old["hardware_id"] in request["reason"]
    cluster.admin.approve(request["id"], reason="SD card died")
    wait_log(log, ": joined", 90)
    node = joined_once(cluster, "PiLike-06")
    assert node["labels"] == {"pi.model": "3b"} and node["role"] == "worker"
    shown = cluster.admin.node(request["id"])
    assert [p["state"] for p in shown["previous_records"]] == ["replaced"]
    assert shown["previous_records"][0]["hardware_id"] == old["hardware_id"]
    assert "node.replaced" in {e["action"] for e in shown["history"]}


def test_reflashed_pi_with_token_replaces_itself(cluster: Cluster) -> None:
    old = records(cluster, "PiLike-07")[0]
    unplug_and_wait_down(cluster, "PiLike-07")
    # Same board (hardware id), new card: a new agent key.
    log = cluster.add_pi("PiLike-07", hardware_id=old["hardware_id"], token="lab")
    wait_log(log, ": joined", 90)
    joined_once(cluster, "PiLike-07")
    # the agent may have reported through another controller than the admin's: its write
    # reaches this one through the swarm's events, a moment later
    (current,) = wait_for("the joined record, seen by the admin's controller", lambda: [
        r for r in records(cluster, "PiLike-07") if r["state"] == "joined"], 30)
    assert current["kind"] == "replacement" and current["agent_id"] != old["agent_id"]
    assert [r["state"] for r in records(cluster, "PiLike-07") if r["id"] != current["id"]] == [
        "replaced"]


def test_duplicate_of_a_live_hostname_is_held_and_the_live_node_untouched(
        cluster: Cluster) -> None:
    client = cluster.lab.docker("PiLike-01")
    client.services.create("busybox:latest", name="probe", command=["sleep", "100000"],
                           mode=docker.types.ServiceMode("global"))
    wait_for("probe running on PiLike-05", lambda: _running_on(cluster, "probe", "PiLike-05"),
             90)
    before = named(cluster, "PiLike-05")[0]
    log = cluster.add_pi("Impostor-1", token="lab", agent_settings={
        "hostname": "PiLike-05", "hardware_id": "impostor-hw-1"})
    held = wait_for("the held request", lambda: [
        r for r in records(cluster, "PiLike-05") if r["state"] == "pending"], 60)[0]
    assert "held" in held["reason"] and held["kind"] == "replacement"
    with pytest.raises(WireError) as refused:
        cluster.admin.approve(held["id"])
    assert refused.value.code == "hostname_in_use" and refused.value.status == 409
    assert "approved" not in log.read_text()
    after = named(cluster, "PiLike-05")
    assert len(after) == 1 and after[0]["id"] == before["id"] and after[0]["state"] == "ready"
    assert _running_on(cluster, "probe", "PiLike-05")
    client.services.get("probe").remove()


def _running_on(cluster: Cluster, service: str, hostname: str) -> bool:
    ids = {n["id"] for n in named(cluster, hostname)}
    client = cluster.lab.docker("PiLike-01")
    tasks = client.services.get(service).tasks(filters={"desired-state": "running"})
    return any(t.get("NodeID") in ids and t["Status"]["State"] == "running" for t in tasks)


def test_revoked_pi_leaves_and_is_refused_until_forgotten(cluster: Cluster) -> None:
    log = cluster.add_pi("PiLike-25", token="lab")
    wait_log(log, ": joined", 90)
    client = cluster.lab.docker("PiLike-01")
    client.swarm.reload()
    old_token = client.swarm.attrs["JoinTokens"]["Worker"]
    service = client.services.create(
        "busybox:latest", name="spread", command=["sleep", "100000"],
        mode=docker.types.ServiceMode("replicated", replicas=8),
        constraints=["node.role==worker"])
    wait_for("a spread task on PiLike-25", lambda: _running_on(cluster, "spread",
                                                                 "PiLike-25"), 90)
    revoked = cluster.admin.revoke("PiLike-25", reason="lost in the post")
    assert revoked["state"] == "revoked"
    assert named(cluster, "PiLike-25") == []
    running = [t for t in service.tasks(filters={"desired-state": "running"})
               if t["Status"]["State"] == "running"]
    assert len(running) == 8  # its tasks moved to the other workers
    client.swarm.reload()
    assert client.swarm.attrs["JoinTokens"]["Worker"] != old_token
    wait_log(log, "revoked", 60)
    wait_for("PiLike-25 out of the swarm", lambda: cluster.lab.docker("PiLike-25").info()[
        "Swarm"]["LocalNodeState"] == "inactive", 60)
    # The old token is worthless now, even for a fresh daemon.
    cluster.lab.add_pi("Probe-2", agent=False)
    fresh = cluster.lab.docker("Probe-2")
    with pytest.raises(docker.errors.APIError):
        fresh.swarm.join(remote_addrs=["198.18.0.11:2377"], join_token=old_token,
                         advertise_addr=cluster.lab.node("Probe-2")["ip"])
    # Asking again is refused while revoked: no new record.
    text = log.read_text()
    cluster.lab.restart_agent("PiLike-25")
    wait_for("a second refusal", lambda: log.read_text().count("was revoked")
             > text.count("was revoked"), 60, interval=0.3)
    assert [r["state"] for r in records(cluster, "PiLike-25")] == ["revoked"]
    # Forgotten: it may ask again, and its token rule lets it back in.
    cluster.admin.forget("PiLike-25")
    cluster.lab.restart_agent("PiLike-25")
    joined_once(cluster, "PiLike-25")
    assert sorted(r["state"] for r in records(cluster, "PiLike-25")) == ["forgotten", "joined"]
    service.remove()


def test_stale_nodes_are_listed_and_pruned(cluster: Cluster) -> None:
    unplug_and_wait_down(cluster, "PiLike-04")
    ready_before = {n["id"] for n in swarm_nodes(cluster.lab, "PiLike-01")
                    if n["state"] == "ready"}
    (row,) = [r for r in cluster.admin.nodes() if r["hostname"] == "PiLike-04" and r["id"]]
    assert row["swarm_state"] == "down" and row["stale"] is False  # 30 minutes by default
    removed = cluster.admin.prune(older_than_seconds=0)
    assert [r["hostname"] for r in removed] == ["PiLike-04"]
    assert named(cluster, "PiLike-04") == []
    ready_after = {n["id"] for n in swarm_nodes(cluster.lab, "PiLike-01")
                   if n["state"] == "ready"}
    assert ready_after == ready_before
    assert [r["state"] for r in records(cluster, "PiLike-04")] == ["pruned"]


def test_controller_killed_between_approval_and_join_report(cluster: Cluster) -> None:
    log = cluster.add_pi("PiLike-26")  # no token: waits for the admin
    wait_for("PiLike-26 pending", lambda: [r for r in records(cluster, "PiLike-26")
                                           if r["state"] == "pending"], 60)
    cluster.admin.approve("PiLike-26")
    pid = cluster.lab.controller_pid("PiLike-01")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # its agent starts it again (and PiLike-02's controller answers meanwhile)
    wait_for("the controller back", lambda: cluster.lab.controller_pid("PiLike-01") not in (
        None, pid) and _healthy(cluster), 60)
    wait_log(log, ": joined", 120)
    joined_once(cluster, "PiLike-26")
    wait_for("one joined record", lambda: [  # written by whichever controller it reached
        r["state"] for r in records(cluster, "PiLike-26")] == ["joined"], 30)


def _healthy(cluster: Cluster) -> bool:
    try:
        return cluster.admin.health()["status"] == "ok"
    except WireError:
        return False


def test_manager_replacement_in_a_three_manager_cluster(cluster: Cluster) -> None:
    rules = cluster.lab.state()["controller"]["state_dir"] + "/rules.toml"
    with open(rules) as fh:
        text = fh.read()
    with open(rules, "w") as fh:  # the controller takes its file's edit into the shared rules
        fh.write('[[rule]]\nmatch = "PiLike-1[0-9]"\nrole = "manager"\napprove = "token"\n\n'
                 + text)
    # shared once the other manager's controller mirrors it: either may answer PiLike-10
    wait_for("the rule shared", lambda: 'match = "PiLike-1[0-9]"' in (
        cluster.lab.pi_dir("PiLike-02") / "controller" / "rules.toml").read_text(), 30)
    cluster.add_pi("PiLike-10", token="lab")
    wait_for("PiLike-10 a reachable manager", lambda: [
        n for n in named(cluster, "PiLike-10") if n["reachability"] == "reachable"], 90)
    unplug_and_wait_down(cluster, "PiLike-10")
    cluster.add_pi("PiLike-10", token="lab", hardware_id="replacement-10")
    node = wait_for("the new PiLike-10 a reachable manager", lambda: [
        n for n in named(cluster, "PiLike-10")
        if n["reachability"] == "reachable" and len(named(cluster, "PiLike-10")) == 1], 120)[0]
    assert node["role"] == "manager"
    managers = [n for n in swarm_nodes(cluster.lab, "PiLike-01") if n["role"] == "manager"]
    assert sorted(n["hostname"] for n in managers) == ["PiLike-01", "PiLike-02", "PiLike-10"]
    assert all(n["reachability"] == "reachable" for n in managers)


def test_two_managers_cannot_lose_one_safely_and_the_controller_says_why(
        cluster: Cluster) -> None:
    # Back to the reference setup's two managers: revoking a live manager is safe.
    cluster.admin.revoke("PiLike-10", reason="back to two managers")
    assert sorted(n["hostname"] for n in swarm_nodes(cluster.lab, "PiLike-01")
                  if n["role"] == "manager") == ["PiLike-01", "PiLike-02"]
    cluster.lab.kill_pi("PiLike-02")  # now the swarm has no quorum: 1 of 2
    wait_for("the swarm to notice", lambda: _quorum_gone(cluster), 90)
    # The state lives in the swarm: nothing can be stored now, and everyone is told why.
    log = cluster.add_pi("PiLike-02", hardware_id="replacement-02")
    wait_log(log, "quorum_lost", 90)
    with pytest.raises(WireError) as refused:
        cluster.admin.create_token(600, 1, description="needs a quorum")
    assert refused.value.code == "quorum_lost" and refused.value.status == 503
    message = refused.value.message
    assert "force-new-cluster" in message and "Two managers tolerate no failure" in message
    # what was written before is still shown, from the controller's memory
    assert [r["state"] for r in records(cluster, "PiLike-02")] == ["joined"]


def _quorum_gone(cluster: Cluster) -> bool:
    """Raft notices a lost majority after its election timeout, not at once."""
    try:
        nodes = named(cluster, "PiLike-02")
    except docker.errors.APIError as exc:
        return "leader" in str(exc)
    return any(n["reachability"] == "unreachable" for n in nodes)
