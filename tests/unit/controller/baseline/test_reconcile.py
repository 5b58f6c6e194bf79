"""The reconciler against an in-memory Docker: what it creates, updates, leaves alone."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from controller.baseline.desired import HASH_LABEL, OWNER_LABEL
from controller.baseline.reconcile import ATTEMPTS, Reconciler
from controller.dockerapi import APIError

from .fakedocker import FakeDockerAPI, node

BASELINE = """
services:
  viz:
    image: viz:1
    ports: ["8080:8080"]
    deploy:
      mode: global
      placement: {constraints: [node.role==manager]}
  nginx:
    image: nginx:1
    deploy:
      replicas: 2
      placement: {constraints: [node.role==worker], max_replicas_per_node: 1}
"""


@pytest.fixture
def api() -> FakeDockerAPI:
    return FakeDockerAPI([node("mgr-1", "manager", leader=True), node("pi-1"), node("pi-2")])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "baseline.yml"
    p.write_text(BASELINE)
    return p


@pytest.fixture
def rec(api: FakeDockerAPI, path: Path) -> Reconciler:
    return Reconciler(api, path)


def results(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {r.service: r.result for r in report.results}


def replicas(api: FakeDockerAPI, name: str) -> int:
    return api.service(name)["Spec"]["Mode"]["Replicated"].get("Replicas", 0)


def test_creates_then_leaves_alone(api: FakeDockerAPI, rec: Reconciler) -> None:
    report = rec.reconcile("test")
    assert report.ok and results(report) == {"viz": "created", "nginx": "created"}
    viz = api.service("viz")["Spec"]
    assert viz["Mode"] == {"Global": {}} and replicas(api, "nginx") == 2
    assert viz["Labels"][OWNER_LABEL] == "true" and len(viz["Labels"][HASH_LABEL]) == 16
    assert api.service("nginx")["Spec"]["TaskTemplate"]["Placement"]["MaxReplicas"] == 1
    calls = len(api.calls)
    again = rec.reconcile("again")
    assert results(again) == {"viz": "unchanged", "nginx": "unchanged"}
    assert len(api.calls) == calls  # no write at all


def test_nodes_coming_and_going_change_no_spec(api: FakeDockerAPI, rec: Reconciler) -> None:
    """One task per manager is Swarm's to keep: a join, a promotion or a lost Pi writes
    nothing, so there is no count to race with the scheduler."""
    rec.reconcile("start")
    writes = len(api.calls)
    api.node_list.append(node("pi-3"))  # joins as a worker ...
    assert results(rec.reconcile("pi-3 joined")) == {"viz": "unchanged", "nginx": "unchanged"}
    api.node_list[-1]["Spec"]["Role"] = "manager"  # ... and is promoted
    api.node_list[1]["Status"]["State"] = "down"  # pi-1 lost
    assert results(rec.reconcile("nodes changed")) == {"viz": "unchanged",
                                                      "nginx": "unchanged"}
    assert len(api.calls) == writes


def test_updates_drift_made_by_hand(api: FakeDockerAPI, rec: Reconciler) -> None:
    rec.reconcile("start")
    spec = api.service("nginx")["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = "nginx:hacked"
    spec["Mode"] = {"Replicated": {"Replicas": 9}}
    report = rec.reconcile("apply")
    nginx = next(r for r in report.results if r.service == "nginx")
    assert nginx.result == "updated"
    assert nginx.changes == ["image nginx:hacked -> nginx:1", "replicas 9 -> 2"]
    assert api.service("nginx")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:1"


def test_never_touches_services_it_does_not_own(api: FakeDockerAPI, rec: Reconciler) -> None:
    hand = api.add_service({"Name": "handmade", "Labels": {"team": "x"},
                            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                            "Mode": {"Replicated": {"Replicas": 1}}})
    clash = api.add_service({"Name": "nginx", "Labels": {},
                             "TaskTemplate": {"ContainerSpec": {"Image": "nginx:mine"}},
                             "Mode": {"Replicated": {"Replicas": 7}}})
    before = {sid: (s["Version"]["Index"], repr(s["Spec"]))
              for sid, s in api.services_by_id.items()}
    report = rec.reconcile("apply")
    nginx = next(r for r in report.results if r.service == "nginx")
    assert nginx.result == "error" and "not managed by swarm-enroll" in nginx.message
    assert not report.ok
    for sid in (hand, clash):
        s = api.services_by_id[sid]
        assert (s["Version"]["Index"], repr(s["Spec"])) == before[sid]
    assert ("update", hand) not in api.calls and ("remove", hand) not in api.calls


def test_removes_owned_services_dropped_from_the_file(api: FakeDockerAPI, rec: Reconciler,
                                                      path: Path) -> None:
    rec.reconcile("start")
    hand = api.add_service({"Name": "handmade", "TaskTemplate": {
        "ContainerSpec": {"Image": "busybox"}}, "Mode": {"Replicated": {"Replicas": 1}}})
    path.write_text(BASELINE.split("  nginx:")[0])
    report = rec.reconcile("apply")
    assert results(report) == {"viz": "unchanged", "nginx": "removed"}
    assert sorted(s["Spec"]["Name"] for s in api.services()) == ["handmade", "viz"]
    assert hand in api.services_by_id


@pytest.mark.parametrize("bad", [
    "services:\n  viz:\n    image: viz:1\n    restart: always\n",
    "services:\n  viz:\n    image: viz:1\n    deploy: {placement: {constraints: [role=x]}}\n",
    "services:\n  viz:\n    image: viz:1\n    ports: ['80:99999']\n",
    "services: [\n",
    "services: {}\nnetworks: {}\n",
])
def test_a_bad_file_changes_nothing(api: FakeDockerAPI, rec: Reconciler, path: Path,
                                    bad: str) -> None:
    rec.reconcile("start")
    api.node_list.append(node("mgr-2", "manager"))  # there would be something to do
    snapshot = repr(api.services_by_id)
    calls = len(api.calls)
    path.write_text(bad)
    report = rec.reconcile("apply")
    assert not report.ok and report.error_code == "baseline_invalid"
    assert report.file_error is not None and report.results == []
    assert repr(api.services_by_id) == snapshot and len(api.calls) == calls


def test_missing_file_changes_nothing(api: FakeDockerAPI, rec: Reconciler, path: Path) -> None:
    rec.reconcile("start")
    path.unlink()
    report = rec.reconcile("apply")
    assert report.error_code == "baseline_invalid" and "no baseline file" in report.error
    assert len(api.services()) == 2


def test_docker_down_is_reported(api: FakeDockerAPI, rec: Reconciler) -> None:
    def broken() -> None:
        raise APIError(503, "This node is not a swarm manager.")
    api.nodes = broken  # type: ignore[method-assign,assignment]
    report = rec.reconcile("apply")
    assert report.error_code == "swarm_unavailable" and "not a swarm manager" in report.error


def image(api: FakeDockerAPI, name: str) -> str:
    return api.service(name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def test_retries_on_update_out_of_sequence(api: FakeDockerAPI, rec: Reconciler,
                                           path: Path) -> None:
    rec.reconcile("start")
    path.write_text(BASELINE.replace("viz:1", "viz:2"))
    api.fail_updates = ATTEMPTS - 1
    report = rec.reconcile("apply")
    assert report.ok and results(report)["viz"] == "updated"
    assert image(api, "viz") == "viz:2"


def test_gives_up_after_attempts(api: FakeDockerAPI, rec: Reconciler, path: Path) -> None:
    rec.reconcile("start")
    path.write_text(BASELINE.replace("viz:1", "viz:2"))
    api.fail_updates = 100
    report = rec.reconcile("apply")
    viz = next(r for r in report.results if r.service == "viz")
    assert viz.result == "error" and "kept changing" in viz.message
    assert sum(1 for c in api.calls if c[0] == "update") >= ATTEMPTS


def test_someone_else_applied_the_same_change_first(api: FakeDockerAPI, path: Path) -> None:
    """Another controller updates between our read and our write: Docker refuses our stale
    version, we read again, find the spec as we want it, and do not write again."""
    ours, theirs = Reconciler(api, path), Reconciler(api, path)
    ours.reconcile("start")
    path.write_text(BASELINE.replace("viz:1", "viz:2"))
    api.before_update = lambda _sid: theirs.reconcile("the other controller")
    report = ours.reconcile("apply")
    assert report.ok and results(report)["viz"] == "unchanged"
    assert image(api, "viz") == "viz:2"
    assert sum(1 for c in api.calls if c[0] == "update") == 2  # theirs, then our refused one


def test_someone_else_created_it_first(api: FakeDockerAPI, path: Path) -> None:
    ours, theirs = Reconciler(api, path), Reconciler(api, path)
    api.before_create = lambda _name: theirs.reconcile("the other controller")
    report = ours.reconcile("start")
    assert report.ok
    assert len(api.services()) == 2


def test_create_refused_by_docker(api: FakeDockerAPI, rec: Reconciler) -> None:
    api.fail_with = APIError(400, "port 8080 is already in use")
    report = rec.reconcile("start")
    assert {r.result for r in report.results} == {"error"}
    assert "port 8080 is already in use" in report.results[0].message


def test_does_not_retry_what_docker_rolled_back(api: FakeDockerAPI, rec: Reconciler,
                                                path: Path) -> None:
    rec.reconcile("start")
    path.write_text(BASELINE.replace("nginx:1", "nginx:broken"))
    rec.reconcile("apply")
    # Docker rolls back: the spec is the old one again and the new tasks were rejected
    nginx = api.service("nginx")
    broken_tt = dict(nginx["Spec"]["TaskTemplate"])
    path.write_text(BASELINE)
    Reconciler(api, path).reconcile("simulate the rollback")
    path.write_text(BASELINE.replace("nginx:1", "nginx:broken"))
    nginx["UpdateStatus"] = {"State": "rollback_completed",
                             "Message": "update rolled back due to failure or early termination"}
    api.run_tasks("nginx", ["pi-1"], state="rejected", spec=broken_tt,
                  err="No such image: nginx:broken")
    api.run_tasks("nginx", ["pi-1", "pi-2"])
    version = nginx["Version"]["Index"]
    report = rec.reconcile("apply")
    result = next(r for r in report.results if r.service == "nginx")
    assert result.result == "error"
    assert "rolled back" in result.message and "No such image: nginx:broken" in result.message
    assert api.service("nginx")["Version"]["Index"] == version
    status = next(s for s in rec.status()["services"] if s["name"] == "nginx")
    assert "No such image" in status["error"] and status["update"]["state"] == \
        "rollback_completed"
    forced = rec.reconcile("apply", force=True)
    assert results(forced)["nginx"] == "updated"


def test_two_reconciles_never_overlap(api: FakeDockerAPI, rec: Reconciler) -> None:
    api.write_delay = 0.02
    threads = [threading.Thread(target=rec.reconcile, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.max_busy == 1
    assert len([c for c in api.calls if c[0] == "create"]) == 2
    assert rec.last_report is not None and rec.last_report.ok


def test_audit_rows_for_changes_only(api: FakeDockerAPI, path: Path) -> None:
    rows: list[tuple[str, str, str]] = []
    rec = Reconciler(api, path, audit=lambda *row: rows.append(row))
    rec.reconcile("start", actor="admin:alice")
    rec.reconcile("again")
    assert [(a, act) for a, act, _ in rows] == [("admin:alice", "baseline.created")] * 2


def test_pending_requests_coalesce_and_node_checks_skip_when_nothing_changed(
        api: FakeDockerAPI, rec: Reconciler) -> None:
    assert rec.run_pending() is not None  # no shape yet: first check reconciles
    assert rec.run_pending() is None  # periodic check, nodes as before
    rec.request("node pi-1 update", only_if_nodes_changed=True)
    assert rec.run_pending() is None
    api.node_list[1]["Status"]["State"] = "down"
    rec.request("node pi-1 update", only_if_nodes_changed=True)
    report = rec.run_pending()
    assert report is not None and "nodes changed (node pi-1 update)" in report.trigger
    rec.request("a joined")
    rec.request("b joined")
    report = rec.run_pending()
    assert report is not None and report.trigger == "a joined, b joined"


def test_join_listener_and_background_worker(api: FakeDockerAPI, rec: Reconciler) -> None:
    rec.interval, rec.settle = 0.05, 0.0
    rec.start()
    try:
        deadline = time.monotonic() + 5
        while rec.last_report is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.last_report is not None and rec.last_report.trigger == "controller start"
        api.node_list.append(node("mgr-2", "manager"))

        class Joined:
            hostname, state = "mgr-2", "joined"

        rec.on_membership_changed(Joined())
        while rec.last_report.trigger != "mgr-2 joined" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.last_report.trigger == "mgr-2 joined"
        api.node_list[1]["Status"]["State"] = "down"  # noticed by the periodic check
        while ("periodic check" not in rec.last_report.trigger
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert rec.last_report.trigger == "nodes changed (periodic check)"
    finally:
        rec.stop()
    assert not any(t.is_alive() for t in threading.enumerate()
                   if t.name.startswith("baseline-"))


def test_status_reports_tasks_nodes_and_drift(api: FakeDockerAPI, rec: Reconciler,
                                              path: Path) -> None:
    rec.reconcile("start")
    api.run_tasks("viz", ["mgr-1"])
    api.run_tasks("nginx", ["pi-1"])
    status = rec.status()
    assert status["file"] == str(path) and status["file_error"] == ""
    rows = {s["name"]: s for s in status["services"]}
    assert (rows["viz"]["desired_tasks"], rows["viz"]["running_tasks"]) == (1, 1)
    assert rows["viz"]["nodes"] == ["mgr-1"] and rows["viz"]["converged"]
    assert rows["viz"]["last_result"]["result"] == "created"
    assert (rows["nginx"]["desired_tasks"], rows["nginx"]["running_tasks"]) == (2, 1)
    assert rows["nginx"]["in_sync"] and not rows["nginx"]["converged"]
    assert not status["converged"]
    api.run_tasks("nginx", ["pi-2"])
    assert rec.status()["converged"]
    path.write_text(BASELINE.replace("nginx:1", "nginx:2"))
    row = next(s for s in rec.status()["services"] if s["name"] == "nginx")
    assert not row["in_sync"] and row["changes"] == ["image nginx:1 -> nginx:2"]
    path.write_text("services: [\n")
    broken = rec.status()
    assert "not valid YAML" in broken["file_error"] and not broken["converged"]
    assert {s["name"] for s in broken["services"]} == {"viz", "nginx"}


def test_replace_file_validates_before_writing(rec: Reconciler, path: Path) -> None:
    from controller.baseline.spec import BaselineError

    with pytest.raises(BaselineError):
        rec.replace_file("services:\n  x:\n    image: a\n    bogus: 1\n")
    assert path.read_text() == BASELINE
    baseline = rec.replace_file("services:\n  x:\n    image: a\n")
    assert baseline.names() == ["x"] and path.read_text().startswith("services:\n  x:")


def test_docker_shaped_spec_is_in_sync_after_create(api: FakeDockerAPI, rec: Reconciler) -> None:
    rec.reconcile("start")
    # the fake stores specs as Docker returns them: nothing may look drifted
    assert api.service("viz")["Spec"]["TaskTemplate"]["Runtime"] == "container"
    assert all(s["in_sync"] for s in rec.status()["services"])


def test_node_events_settle_so_a_join_is_seen_once(api: FakeDockerAPI, rec: Reconciler) -> None:
    """A joining manager shows up first as a worker (node event), then is promoted and
    reported joined: one reconcile after the dust settles, not one per step."""
    triggers: list[str] = []
    real = rec.reconcile

    def counting(trigger: str, **kwargs: object) -> object:
        triggers.append(trigger)
        return real(trigger, **kwargs)  # type: ignore[arg-type]

    rec.reconcile = counting  # type: ignore[method-assign]
    rec.interval, rec.settle = 30.0, 0.5
    rec.start()
    try:
        deadline = time.monotonic() + 5
        while rec.last_report is None and time.monotonic() < deadline:
            time.sleep(0.01)
        api.node_list.append(node("mgr-2", "worker"))
        rec.request("node mgr-2 create", only_if_nodes_changed=True, settle=True)
        time.sleep(0.1)
        api.node_list[-1]["Spec"]["Role"] = "manager"

        class Joined:
            hostname, state = "mgr-2", "joined"

        rec.on_membership_changed(Joined())
        time.sleep(1.0)
    finally:
        rec.stop()
    assert triggers == ["controller start", "mgr-2 joined"]


def test_a_burst_of_joins_is_one_reconcile(api: FakeDockerAPI, rec: Reconciler) -> None:
    """A fleet powering up: joins a little apart, inside the settle window, coalesce."""
    triggers: list[str] = []
    real = rec.reconcile

    def counting(trigger: str, **kwargs: object) -> object:
        triggers.append(trigger)
        return real(trigger, **kwargs)  # type: ignore[arg-type]

    rec.reconcile = counting  # type: ignore[method-assign]
    rec.interval, rec.settle = 30.0, 0.4
    rec.start()
    try:
        deadline = time.monotonic() + 5
        while rec.last_report is None and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(5):

            class Joined:
                hostname, state = f"pi-{i + 3}", "joined"

            rec.on_membership_changed(Joined())
            time.sleep(0.1)
        while len(triggers) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.6)  # a second reconcile would have started by now
    finally:
        rec.stop()
    assert triggers == ["controller start",
                        "pi-3 joined, pi-4 joined, pi-5 joined, pi-6 joined, pi-7 joined"]


def test_a_pi_on_its_way_to_manager_counts_as_one(api: FakeDockerAPI, path: Path) -> None:
    """PiLike-02 joins as a worker and is promoted after it reports: meanwhile it is
    counted by the role its enrollment gives it, never as one more worker."""
    api.node_list.append(node("mgr-2", "worker"))
    settling = {"mgr-2": "manager"}
    rec = Reconciler(api, path, settling=lambda: settling)
    assert {n.hostname: n.role for n in rec.nodes()}["mgr-2"] == "manager"
    rec.reconcile("start")
    rows = {s["name"]: s for s in rec.status()["services"]}
    assert rows["viz"]["desired_tasks"] == 2  # mgr-1 and mgr-2
    api.node_list[-1]["Spec"]["Role"] = "manager"  # promoted: nothing to reconcile
    settling.clear()
    assert rec.run_pending() is None


def pending_task(api: FakeDockerAPI, name: str, age: float) -> dict[str, object]:
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - age))
    task = {"ID": f"stuck-{name}", "ServiceID": api.service(name)["ID"], "NodeID": "",
            "DesiredState": "running", "CreatedAt": when + ".5Z",
            "Status": {"State": "pending", "Timestamp": when + ".123456789Z",
                       "Message": "pending task scheduling"}}
    api.task_list.append(task)
    return task


def test_watchdog_forces_one_update_of_a_stuck_service(api: FakeDockerAPI, path: Path) -> None:
    rows: list[tuple[str, str, str]] = []
    rec = Reconciler(api, path, audit=lambda *row: rows.append(row))
    rec.reconcile("start")
    api.run_tasks("nginx", ["pi-1"])
    task = pending_task(api, "nginx", age=60)
    version = api.service("nginx")["Version"]["Index"]
    rec.watch_stuck()
    nginx = api.service("nginx")
    assert nginx["Version"]["Index"] != version
    assert nginx["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
    assert rec.stuck["nginx"]["room_on"] == ["pi-2"] and rec.stuck["nginx"]["acted"]
    unstuck = [row for row in rows if row[1] == "baseline.unstuck"]
    assert [actor for actor, _, _ in unstuck] == ["controller"]
    assert "pending for 6" in unstuck[0][2] and "pi-2" in unstuck[0][2]
    status = {s["name"]: s for s in rec.status()["services"]}
    assert status["nginx"]["stuck"]["task"] == task["ID"] and status["viz"]["stuck"] is None
    rec.watch_stuck()  # still stuck: once per episode, no second forced update
    assert api.service("nginx")["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
    task["Status"] = {"State": "running"}
    rec.watch_stuck()
    assert rec.stuck == {}


def test_watchdog_leaves_a_task_that_has_no_room_or_is_young(api: FakeDockerAPI,
                                                            rec: Reconciler) -> None:
    rec.reconcile("start")
    api.run_tasks("nginx", ["pi-1", "pi-2"])  # max one per node: no worker has room
    pending_task(api, "nginx", age=300)
    rec.watch_stuck()
    assert rec.stuck == {} and api.service("nginx")["Spec"]["TaskTemplate"]["ForceUpdate"] == 0
    api.task_list = [t for t in api.task_list if t["NodeID"] != "id-pi-2"]
    api.task_list[-1]["Status"]["Timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())
    rec.watch_stuck()  # room on pi-2 now, but pending for a moment only
    assert rec.stuck == {}


def test_an_edited_file_is_applied_by_the_periodic_check(api: FakeDockerAPI, rec: Reconciler,
                                                         path: Path) -> None:
    """An edit made anywhere (a manager's file, another controller's apply) reaches the
    swarm at the acting controller's next check, without anyone asking."""
    rec.reconcile("start")
    assert rec.run_pending() is None
    path.write_text(BASELINE.replace("nginx:1", "nginx:2"))
    os.utime(path, (2_000_000_000, 2_000_000_000))
    report = rec.run_pending()
    assert report is not None and report.trigger == "the baseline changed"
    assert image(api, "nginx") == "nginx:2"
    assert rec.run_pending() is None
