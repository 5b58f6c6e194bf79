"""The quorum keeper on the simulated reference cluster, whose rules keep 3 managers and
let the keeper promote the Pi 3s (`[quorum]` in deploy/lab/rules.toml).

The tests share one demo cluster and run in file order: the demo's third manager is the
keeper's; a Zero W manager dies and is replaced by a Pi 3; its hostname comes back on a
new board, and the keeper demotes the manager it no longer needs. The controller on
PiLike-01 is the one that acts (the only one running in this lab), so it is never killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.keeper import DEMOTED, LABEL, PROMOTED
from deploy.lab.demo import swarm_nodes, wait_for

from .conftest import Cluster, wait_log

pytestmark = pytest.mark.lab

DOWN_AFTER = 20  # seconds; the demo's rules say 120
SETTLED = "Now: nothing to do: 3 healthy managers, 3 wanted"


def nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """`docker node ls` on PiLike-01, by hostname (one node per name is expected)."""
    return {n["hostname"]: n for n in swarm_nodes(cluster.lab, "PiLike-01")}


def managers(cluster: Cluster) -> list[str]:
    return sorted(h for h, n in nodes(cluster).items() if n["role"] == "manager")


def managers_now(cluster: Cluster, wanted: list[str]) -> dict[str, dict[str, Any]] | None:
    """The nodes, once exactly `wanted` are the managers and all of them reachable."""
    found = nodes(cluster)
    ours = [n for n in found.values() if n["role"] == "manager"]
    if sorted(n["hostname"] for n in ours) == wanted and \
            all(n["reachability"] == "reachable" for n in ours):
        return found
    return None


def keeper_events(cluster: Cluster, since: float = 0.0) -> list[dict[str, Any]]:
    """The keeper's audit events, oldest first."""
    return [e for e in reversed(cluster.admin.audit(since=since, limit=1000))
            if e["action"].startswith("quorum.")]


def enrollctl_cluster(cluster: Cluster) -> str:
    status = cluster.status
    env = {**os.environ, "ENROLLCTL_URL": status["controller_url"],
           "ENROLLCTL_CA_FILE": status["ca"], "ENROLLCTL_TOKEN": status["admin_token"],
           "ENROLLCTL_CONFIG": "/dev/null"}
    out = subprocess.run([str(Path(sys.executable).parent / "enrollctl"), "cluster"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def settled(cluster: Cluster) -> str:
    return wait_for("the keeper to have nothing to do", lambda: (
        out if SETTLED in (out := enrollctl_cluster(cluster)) else ""), 60)


def test_the_demos_third_manager_is_promoted_by_the_keeper(cluster: Cluster) -> None:
    found = nodes(cluster)
    assert managers(cluster) == ["PiLike-01", "PiLike-02", "PiLike-03"]
    assert all(found[m]["reachability"] == "reachable" for m in managers(cluster))
    assert found["PiLike-03"]["labels"] == {"pi.model": "3b", LABEL: PROMOTED}
    assert found["PiLike-02"]["labels"] == {"pi.model": "zero-w"}  # a manager by rule
    promoted = [e for e in keeper_events(cluster) if e["action"] == "quorum.promote"]
    assert "PiLike-03" in {e["hostname"] for e in promoted}
    assert {e["actor"] for e in promoted} == {"keeper:PiLike-01"}
    assert any("PiLike-03 promoted by the quorum keeper" in line for line in cluster.said)
    out = settled(cluster)
    assert "Quorum keeper: on, keeps 3 managers, may promote PiLike-0[3-8], a manager Down " \
        "for 120 s is lost." in out
    assert "Raft: 3 managers: quorum is 2, so the swarm tolerates 1 manager failure." in out


def test_a_dead_manager_is_replaced_after_the_set_time(cluster: Cluster) -> None:
    rules = Path(cluster.lab.state()["controller"]["state_dir"]) / "rules.toml"
    text = rules.read_text()
    assert "down_after_seconds = 120" in text
    rules.write_text(text.replace("down_after_seconds = 120",
                                  f"down_after_seconds = {DOWN_AFTER}"))
    wait_for("the shorter time taken", lambda: cluster.admin.cluster()["keeper"][
        "down_after_seconds"] == DOWN_AFTER, 30)
    before = time.time()  # the lab's Pis share this host's clock
    cluster.lab.kill_pi("PiLike-02")
    wait_for("PiLike-02 Down", lambda: nodes(cluster)["PiLike-02"]["state"] == "down", 90)
    found = wait_for("PiLike-04 promoted in PiLike-02's place", lambda: managers_now(
        cluster, ["PiLike-01", "PiLike-03", "PiLike-04"]), 120)
    dead = found["PiLike-02"]
    assert (dead["role"], dead["state"]) == ("worker", "down")
    assert dead["labels"] == {"pi.model": "zero-w", LABEL: DEMOTED}  # a manager once back
    assert found["PiLike-04"]["labels"] == {"pi.model": "3b", LABEL: PROMOTED}
    events = keeper_events(cluster, since=before)
    assert [(e["action"], e["hostname"]) for e in events] == [
        ("quorum.demote", "PiLike-02"), ("quorum.promote", "PiLike-04")]
    assert "PiLike-02 has been Down for" in events[0]["reason"]
    assert f"(lost after {DOWN_AFTER} s)" in events[0]["reason"]
    assert "PiLike-04 is promoted next" in events[0]["reason"]
    assert events[1]["reason"] == "2 managers of 3 wanted"
    out = settled(cluster)
    assert "Last action: promoted PiLike-04" in out and "by PiLike-01): 2 managers" in out
    assert "tolerates 1 manager failure" in out


def test_the_dead_managers_hostname_back_and_the_extra_manager_demoted(
        cluster: Cluster) -> None:
    before = time.time()  # the lab's Pis share this host's clock
    ctl_dir = cluster.lab.pi_dir("PiLike-04") / "controller"  # the keeper's manager's
    wait_for("PiLike-04's controller, with the CA key", lambda: (ctl_dir / "ca-key.pem").exists(),
             60)
    log = cluster.add_pi("PiLike-02", hardware_id="replacement-02")  # a new board
    request = wait_for("the replacement request", lambda: [
        r for r in cluster.admin.nodes() if r["hostname"] == "PiLike-02"
        and r["kind"] == "replacement" and r["state"] == "pending"], 60)[0]
    approved = cluster.admin.approve(request["id"], reason="new board for PiLike-02")
    assert approved["role"] == "manager" and LABEL not in approved["labels"]
    wait_log(log, ": joined", 90)
    found = wait_for("PiLike-04, the keeper's extra manager, demoted", lambda: managers_now(
        cluster, ["PiLike-01", "PiLike-02", "PiLike-03"]), 120)
    back = [n for n in swarm_nodes(cluster.lab, "PiLike-01") if n["hostname"] == "PiLike-02"]
    assert len(back) == 1 and back[0]["state"] == "ready"  # the stale node is gone
    assert back[0]["labels"] == {"pi.model": "zero-w"}
    assert (found["PiLike-04"]["role"], found["PiLike-04"]["state"]) == ("worker", "ready")
    assert found["PiLike-04"]["labels"] == {"pi.model": "3b"}
    assert found["PiLike-03"]["labels"] == {"pi.model": "3b", LABEL: PROMOTED}
    events = keeper_events(cluster, since=before)
    assert [(e["action"], e["hostname"]) for e in events] == [("quorum.demote", "PiLike-04")]
    assert events[0]["reason"] == ("4 healthy managers, 3 wanted: PiLike-04, promoted by the "
                                   "keeper, is one too many")
    out = settled(cluster)
    assert "Last action: demoted PiLike-04" in out
    wait_for("PiLike-04's controller stopped, its keys gone (a worker holds none)", lambda: (
        cluster.lab.controller_pid("PiLike-04") is None
        and not (ctl_dir / "ca-key.pem").exists()), 60)
    assert not (ctl_dir / "tls-key.pem").exists()
