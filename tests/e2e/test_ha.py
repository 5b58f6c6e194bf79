"""Every manager runs the controller, with one state kept in the swarm itself: any one Pi can
die, the one that ran `init` included, and enrollment goes on.

The tests share one demo cluster (two managers by rule, a third promoted by the quorum
keeper) and run in file order: a rule edited on one manager decides on all of them, two
controllers decide at the same moment, then the first manager's Pi is powered off, comes
back on a new board, and becomes a manager again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.client import ControllerClient
from agent.wire.errors import WireError
from agent.wire.keys import load_or_create_agent_key
from agent.wire.messages import EnrollmentRequest
from controller.adminclient import AdminClient
from deploy.lab.demo import admin_client, swarm_nodes, wait_for

from .conftest import Cluster, wait_log

pytestmark = pytest.mark.lab

FIRST, SECOND, THIRD = "PiLike-01", "PiLike-02", "PiLike-03"  # THIRD: the keeper's


def serving(cluster: Cluster) -> set[str]:
    """The Pis whose controller answers (its process may run a moment before that)."""
    answering = set()
    for c in cluster.lab.status()["controllers"]:
        try:
            admin_on(cluster, c["name"]).health()
            answering.add(c["name"])
        except WireError:
            pass
    return answering


def admin_on(cluster: Cluster, pi: str) -> AdminClient:
    return admin_client(cluster.lab, pi)


def records_on(cluster: Cluster, pi: str) -> list[dict[str, Any]]:
    """What `enrollctl nodes` shows, asked of the controller on `pi`: the records."""
    return sorted(({k: n[k] for k in ("id", "hostname", "state", "role", "fingerprint")}
                   for n in admin_on(cluster, pi).nodes() if n["id"]), key=lambda r: r["id"])


def agreed(cluster: Cluster, a: str, b: str, hostname: str = "") -> list[dict[str, Any]]:
    """The records (of `hostname`, or all) as the controllers on `a` and `b` both show
    them: each learns the other controllers' writes from the swarm's events, within a
    fraction of a second (README: Every manager runs the controller)."""
    def same() -> list[list[dict[str, Any]]] | None:
        on_a, on_b = ([r for r in records_on(cluster, pi)
                       if not hostname or r["hostname"] == hostname] for pi in (a, b))
        return [on_a] if on_a == on_b else None
    return wait_for(f"the controllers on {a} and {b} to show the same records", same, 5,
                    interval=0.2)[0]


def managers(cluster: Cluster, via: str) -> dict[str, dict[str, Any]]:
    return {n["hostname"]: n for n in swarm_nodes(cluster.lab, via) if n["role"] == "manager"}


def test_the_promoted_managers_serve_within_a_minute(cluster: Cluster) -> None:
    """PiLike-02 joined as a manager by rule, PiLike-03 was promoted by the keeper: each
    one's agent starts its controller, which writes its config from Docker and takes the CA
    key from the shared state."""
    wait_for("controllers on the promoted managers",
             lambda: {SECOND, THIRD} <= serving(cluster), 60)
    assert set(managers(cluster, FIRST)) == {FIRST, SECOND, THIRD}
    for pi in (SECOND, THIRD):
        assert admin_on(cluster, pi).health()["ca"] == cluster.status["pin"]
        config = (cluster.lab.pi_dir(pi) / "controller" / "controller.toml").read_text()
        assert f'advertise_addr = "{cluster.lab.node(pi)["ip"]}"' in config
        assert agreed(cluster, pi, FIRST)
    # workers carry no controller
    assert serving(cluster) == {FIRST, SECOND, THIRD}


def test_a_rule_edited_on_one_manager_decides_on_all(cluster: Cluster) -> None:
    rules = cluster.lab.pi_dir(SECOND) / "controller" / "rules.toml"  # edited on manager 2
    rules.write_text('[[rule]]\nmatch = "PiNew-*"\nrole = "worker"\napprove = "auto"\n\n'
                     + rules.read_text())
    # controller 2 takes its file's edit into the shared state; the others mirror it
    for pi in (FIRST, THIRD):
        wait_for(f"the rule shared with {pi}", lambda pi=pi: 'match = "PiNew-*"' in (
            cluster.lab.pi_dir(pi) / "controller" / "rules.toml").read_text(), 30)
    log = cluster.add_pi("PiNew-01")  # no token: only the new rule lets it in
    wait_log(log, ": joined", 90)
    (record,) = [r for r in admin_on(cluster, FIRST).nodes() if r["hostname"] == "PiNew-01"]
    assert (record["role"], record["approve"], record["state"]) == ("worker", "auto", "joined")
    health = admin_on(cluster, THIRD).cluster()
    assert {c["hostname"] for c in health["controllers"]} == {FIRST, SECOND, THIRD}
    assert health["acting"] in (FIRST, SECOND, THIRD)


def test_two_controllers_approve_one_record_at_once(cluster: Cluster) -> None:
    log = cluster.add_pi("PiLike-31")  # token rule, no token: waits for an admin
    record = wait_for("PiLike-31 pending", lambda: [
        r for r in admin_on(cluster, FIRST).nodes("pending")
        if r["hostname"] == "PiLike-31"], 60)[0]
    results: list[Any] = []
    start = threading.Barrier(2)

    def approve(pi: str) -> None:
        client = admin_on(cluster, pi)
        start.wait()
        try:
            results.append(client.approve(record["id"], reason=f"via {pi}"))
        except WireError as exc:
            results.append(exc)

    threads = [threading.Thread(target=approve, args=(pi,)) for pi in (FIRST, SECOND)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refused = [r for r in results if isinstance(r, WireError)]
    assert len(results) == 2 and len(refused) == 1, results
    assert (refused[0].status, refused[0].code) == (409, "not_pending")
    approvals = [e for e in admin_on(cluster, SECOND).audit(hostname="PiLike-31")
                 if e["action"] == "node.approve"]
    assert len(approvals) == 1
    wait_log(log, ": joined", 90)
    assert [n["hostname"] for n in swarm_nodes(cluster.lab, FIRST)].count("PiLike-31") == 1


def test_two_agents_race_for_one_name_through_two_controllers(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    """Two strangers with the lab's token claim one new name at the same moment, each at
    another controller: one record is granted; the other is held, with no grant."""
    ctl = cluster.lab.state()["controller"]
    ca = cluster.lab.ca_file
    urls = {c["name"]: c["url"] for c in cluster.lab.status()["controllers"]}
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def claim(i: int, pi: str) -> None:
        key = load_or_create_agent_key(tmp_path / f"key-{i}.pem")
        client = ControllerClient(urls[pi], ca, key)
        request = EnrollmentRequest(hostname="PiLike-40", hardware_id=f"00000000race{i:04d}",
                                    bootstrap_token=ctl["token"])
        start.wait()
        try:
            answers.append(client.enroll(request.to_json()))
        finally:
            client.close()

    threads = [threading.Thread(target=claim, args=(i, pi))
               for i, pi in enumerate((FIRST, SECOND))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    granted = [a for a in answers if a.get("grant")]
    assert len(answers) == 2 and len(granted) == 1, answers
    held = next(a for a in answers if not a.get("grant"))
    assert held["status"] == "pending" and held["id"] != granted[0]["id"]
    on_first = wait_for("both records of PiLike-40 on the first controller", lambda: (
        r if len(r := [n for n in records_on(cluster, FIRST) if n["hostname"] == "PiLike-40"])
        == 2 else None), 5, interval=0.2)
    assert sorted(r["state"] for r in on_first) == ["approved", "pending"]
    assert agreed(cluster, FIRST, THIRD, "PiLike-40") == on_first


def test_the_pi_that_ran_init_dies_and_enrollment_goes_on(cluster: Cluster) -> None:
    """Power off PiLike-01 (first controller, first manager, likely the acting one): within
    a minute a new Pi with a token joins, a waiting Pi is approved against another
    controller, and both remaining controllers show the same records."""
    admin = admin_on(cluster, SECOND)
    cluster.lab.kill_pi(FIRST)
    started = time.monotonic()
    token_log = cluster.add_pi("PiLike-32", token="lab")
    manual_log = cluster.add_pi("PiLike-33")
    pending = wait_for("PiLike-33 waiting, seen by controller 2", lambda: [
        r for r in admin.nodes("pending") if r["hostname"] == "PiLike-33"], 60)[0]
    admin.approve(pending["id"], reason="approved against controller 2")
    wait_log(token_log, ": joined", 60)
    wait_log(manual_log, ": joined", 60)
    print(f"both joined {time.monotonic() - started:.1f}s after {FIRST} died")
    assert agreed(cluster, SECOND, THIRD)
    # cluster-wide work moved to a live controller within 30 s
    acting = wait_for("another controller acting", lambda: (
        a if (a := admin.cluster()["acting"]) in (SECOND, THIRD) else None), 30)
    assert acting != FIRST


def test_a_baseline_change_after_the_death_is_applied(cluster: Cluster) -> None:
    text = (cluster.lab.pi_dir(THIRD) / "controller" / "baseline.yml").read_text()
    edited = text.replace("parallelism: 3", "parallelism: 2", 1)
    assert edited != text
    (cluster.lab.pi_dir(THIRD) / "controller" / "baseline.yml").write_text(edited)
    # controller 3 takes the edit into the shared state; the acting one applies it

    def applied() -> bool:
        api = cluster.lab.docker(SECOND).api
        return api.inspect_service("nginx")["Spec"]["UpdateConfig"]["Parallelism"] == 2

    wait_for("the edit applied by the acting controller", applied, 30)


def test_the_dead_managers_name_comes_back_on_a_new_board(cluster: Cluster) -> None:
    admin = admin_on(cluster, SECOND)
    log = cluster.add_pi(FIRST, hardware_id="00000000newboard1")  # manual rule: an admin
    request = wait_for("the replacement request", lambda: [
        r for r in admin.nodes("pending") if r["hostname"] == FIRST
        and r["kind"] == "replacement"], 60)[0]
    admin.approve(request["id"], reason="its SD card died; same name, new board")
    wait_log(log, ": joined", 120)
    # the keeper may have promoted a Pi 3 meanwhile (the old node was Down past its
    # set time); with the board back it demotes one again: three managers
    mgrs = wait_for("the new board a manager, the old node gone", lambda: (
        m if len(m := managers(cluster, SECOND)) == 3 and m.get(FIRST, {}).get("state")
        == "ready" else None), 180)
    assert {FIRST, SECOND} <= set(mgrs)
    assert [n["hostname"] for n in swarm_nodes(cluster.lab, SECOND)].count(FIRST) == 1
    wait_for(f"a controller on the new {FIRST}", lambda: FIRST in serving(cluster), 60)
    assert agreed(cluster, FIRST, SECOND)
