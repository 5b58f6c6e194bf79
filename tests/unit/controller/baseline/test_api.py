"""GET /v1/baseline, POST /v1/baseline/apply, GET /v1/cluster: auth, answers, errors."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller import enrollctl
from controller.app import create_app
from controller.baseline.reconcile import Reconciler
from controller.dockerapi import DockerError
from controller.keeper import STATUS_KEY

from ...helpers import Controller
from .fakedocker import FakeDockerAPI, node
from .test_reconcile import BASELINE

ENDPOINTS = [("get", "/v1/baseline"), ("post", "/v1/baseline/apply"), ("get", "/v1/cluster")]


@pytest.fixture
def api() -> FakeDockerAPI:
    return FakeDockerAPI([node("mgr-1", "manager", leader=True), node("mgr-2", "manager"),
                          node("pi-1"), node("pi-2")])


@pytest.fixture
def ctl(controller: Controller, api: FakeDockerAPI) -> Iterator[Controller]:
    """The controller's app built again, as `serve` builds it, with a reconciler injected."""
    path = controller.config.baseline_path
    path.write_text(BASELINE)
    app = create_app(controller.config, swarm=controller.swarm,
                     baseline=Reconciler(api, path))
    app.testing = False
    built = dataclasses.replace(controller, app=app, client=app.test_client())
    yield built
    built.state.close()


def test_app_wires_the_reconciler(ctl: Controller) -> None:
    state = ctl.app.extensions["swarm_enroll"]
    assert state.baseline is not None and state.baseline.audit is not None
    assert state.baseline.on_membership_changed in state.enrollment.membership_changed


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_admin_token_required(ctl: Controller, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        response = getattr(ctl.client, method)(path, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_apply_then_status(ctl: Controller, api: FakeDockerAPI) -> None:
    response = ctl.admin_post("/v1/baseline/apply")
    assert response.status_code == 200
    report = response.get_json()
    assert report["ok"] and report["trigger"] == "apply by admin:alice"
    assert {r["service"]: r["result"] for r in report["results"]} == {
        "viz": "created", "nginx": "created"}
    assert response.headers["Cache-Control"] == "no-store"
    api.run_tasks("viz", ["mgr-1", "mgr-2"])
    status = ctl.admin_get("/v1/baseline").get_json()
    viz = next(s for s in status["services"] if s["name"] == "viz")
    assert (viz["desired_tasks"], viz["running_tasks"], viz["nodes"]) == (2, 2,
                                                                         ["mgr-1", "mgr-2"])
    assert viz["last_result"]["result"] == "created"
    assert status["last_reconcile"]["trigger"] == "apply by admin:alice"
    events = ctl.state.events(action="baseline.created")
    assert {e.actor for e in events} == {"admin:alice"} and len(events) == 2


def test_apply_with_a_bad_file_is_422_and_changes_nothing(ctl: Controller,
                                                         api: FakeDockerAPI) -> None:
    ctl.admin_post("/v1/baseline/apply")
    path = ctl.config.baseline_path
    path.write_text(BASELINE.replace("    image: nginx:1\n", "    image: nginx:1\n    foo: 1\n"))
    api.node_list.append(node("mgr-3", "manager"))
    snapshot = repr(api.services_by_id)
    response = ctl.admin_post("/v1/baseline/apply")
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "baseline_invalid"
    assert (body["service"], body["key"]) == ("nginx", "foo")
    assert "service 'nginx', key 'foo'" in body["message"]
    assert "nothing was changed" in body["message"]
    assert repr(api.services_by_id) == snapshot
    status = ctl.admin_get("/v1/baseline").get_json()
    assert "key 'foo'" in status["file_error"] and not status["converged"]


def test_apply_an_uploaded_file(ctl: Controller, api: FakeDockerAPI) -> None:
    path = ctl.config.baseline_path
    bad = "services:\n  web:\n    image: w\n    ports: ['80:123456']\n"
    response = ctl.admin_post("/v1/baseline/apply", {"file": bad})
    assert response.status_code == 422
    assert response.get_json()["key"] == "ports[0]"
    assert path.read_text() == BASELINE and api.services() == []
    good = "services:\n  web:\n    image: w\n"
    response = ctl.admin_post("/v1/baseline/apply", {"file": good})
    assert response.status_code == 200
    assert [r["service"] for r in response.get_json()["results"]] == ["web"]
    assert path.read_text() == good


@pytest.mark.parametrize("body", [[1], {"forse": True}, {"force": "yes"}, {"file": 3}])
def test_apply_bad_body(ctl: Controller, body: object) -> None:
    response = ctl.admin_post("/v1/baseline/apply", body)
    assert response.status_code == 400 and response.get_json()["error"] == "bad_json"


def test_cluster(ctl: Controller) -> None:
    body = ctl.admin_get("/v1/cluster").get_json()
    assert body["managers"]["total"] == 2 and body["workers"]["total"] == 2
    assert body["leader"]["hostname"] == "mgr-1"
    assert "tolerates zero manager failures" in body["raft"]["summary"]
    assert "odd number" in body["raft"]["recommendation"]
    assert body["keeper"]["enabled"] is False and body["keeper"]["last"] is None


QUORUM = '\n[quorum]\nmanagers = 3\npromote = "pi-*"\ndown_after_seconds = 60\n'


def test_cluster_shows_the_quorum_keeper(ctl: Controller, api: FakeDockerAPI) -> None:
    path = ctl.config.rules_path
    path.write_text(path.read_text() + QUORUM)  # any controller's edit is shared
    keeper = ctl.admin_get("/v1/cluster").get_json()["keeper"]
    assert (keeper["enabled"], keeper["managers"], keeper["promote"],
            keeper["down_after_seconds"]) == (True, 3, "pi-*", 60)
    assert keeper["waiting"] == "its next step" and keeper["last"] is None
    last = {"action": "promote", "hostname": "pi-1", "reason": "2 managers of 3 wanted",
            "at": 1_750_000_000.0, "by": "mgr-1"}
    ctl.state.update_doc(STATUS_KEY, lambda _old: {
        "enabled": True, "managers": 3, "waiting": "the change to settle", "last": last,
        "since": 1_750_000_001.0})
    keeper = ctl.admin_get("/v1/cluster").get_json()["keeper"]
    assert keeper["last"] == last and keeper["waiting"] == "the change to settle"
    for n in api.node_list:  # the leader alone is left of two managers
        if n["Description"]["Hostname"] == "mgr-2":
            n["ManagerStatus"]["Reachability"] = "unreachable"
    keeper = ctl.admin_get("/v1/cluster").get_json()["keeper"]
    assert keeper["waiting"].startswith("no quorum")


def test_docker_unreachable_is_503_json(ctl: Controller, api: FakeDockerAPI) -> None:
    def down(*_a: object, **_k: object) -> None:
        raise DockerError("unix:///var/run/docker.sock: ConnectionRefusedError")
    api.nodes = down  # type: ignore[method-assign,assignment]
    for method, path in ENDPOINTS:
        response = getattr(ctl.client, method)(path, headers=ctl.admin)
        assert response.status_code == 503, path
        assert response.get_json()["error"] == "swarm_unavailable"


def test_without_docker_the_endpoints_say_so(controller: Controller) -> None:
    assert controller.app.extensions["swarm_enroll"].baseline is None  # FakeSwarm
    for method, path in ENDPOINTS:
        response = getattr(controller.client, method)(path, headers=controller.admin)
        assert response.status_code == 503
        assert response.get_json()["error"] == "baseline_unavailable"


class FakeAdminClient:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    def _json(self, response):  # type: ignore[no-untyped-def]
        from agent.wire.errors import WireError

        body = response.get_json()
        if response.status_code >= 400:
            raise WireError(body["error"], body["message"], response.status_code)
        return body

    def baseline(self):  # type: ignore[no-untyped-def]
        return self._json(self.ctl.admin_get("/v1/baseline"))

    def baseline_apply(self, file_text=None, force=False):  # type: ignore[no-untyped-def]
        body = {"force": force, **({"file": file_text} if file_text is not None else {})}
        return self._json(self.ctl.admin_post("/v1/baseline/apply", body))

    def cluster(self):  # type: ignore[no-untyped-def]
        return self._json(self.ctl.admin_get("/v1/cluster"))


def test_enrollctl_baseline_and_cluster(ctl: Controller, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setattr(enrollctl.Context, "client", property(lambda self: FakeAdminClient(ctl)))
    runner = CliRunner()
    args = ["--config", "/dev/null"]
    applied = runner.invoke(enrollctl.main, [*args, "baseline", "apply"])
    assert applied.exit_code == 0, applied.output
    assert "viz" in applied.output and "created" in applied.output
    status = runner.invoke(enrollctl.main, [*args, "baseline"])
    assert status.exit_code == 0 and "not converged" in status.output
    assert "0/2" in status.output  # viz: no task running yet of two
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  viz:\n    image: v\n    deploy: {replicas: lots}\n")
    refused = runner.invoke(enrollctl.main, [*args, "baseline", "apply", "--file", str(bad)])
    assert refused.exit_code == 1
    assert "baseline_invalid" in refused.output and "deploy.replicas" in refused.output
    assert f"{bad}: service 'viz'" in refused.output  # the user's file, not the controller's
    assert str(ctl.config.baseline_path) not in refused.output
    cluster = runner.invoke(enrollctl.main, [*args, "cluster"])
    assert cluster.exit_code == 0
    assert "tolerates zero manager failures" in cluster.output
    assert "Leader: mgr-1" in cluster.output
    assert "Quorum keeper: off (add a [quorum] table" in cluster.output
    as_json = runner.invoke(enrollctl.main, [*args, "--json", "cluster"])
    assert '"fault_tolerance": 0' in as_json.output
    rules = ctl.config.rules_path
    rules.write_text(rules.read_text() + QUORUM)
    ctl.state.update_doc(STATUS_KEY, lambda _old: {
        "enabled": True, "managers": 3, "waiting": "nothing to do: 3 healthy managers, 3 "
        "wanted", "since": 1_750_000_001.0, "last": {
            "action": "demote", "hostname": "pi-2", "at": 1_750_000_000.0, "by": "mgr-1",
            "reason": "4 healthy managers, 3 wanted: pi-2, promoted by the keeper, is one "
                      "too many"}})
    shown = runner.invoke(enrollctl.main, [*args, "cluster"]).output
    assert "Quorum keeper: on, keeps 3 managers, may promote pi-*, a manager Down for 60 s " \
        "is lost." in shown
    assert "Last action: demoted pi-2 (" in shown and ", by mgr-1): 4 healthy managers" in shown
    assert "Now: nothing to do: 3 healthy managers, 3 wanted (since " in shown


def test_cluster_tells_controllers_heard_from_lately_from_the_others(
        ctl: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead or demoted manager's controller stays in the registry until it is forgotten:
    listed apart, not as serving."""
    now = time.time()
    for host, ago in (("mgr-1", 5.0), ("mgr-2", 100.0)):
        ctl.state.update_doc(f"controller/{host}", lambda _old, host=host, ago=ago: {
            "hostname": host, "url": f"https://{host}:8443", "at": now - ago})
    rows = ctl.admin_get("/v1/cluster").get_json()["controllers"]
    assert [(r["hostname"], r["serving"]) for r in rows] == [("mgr-1", True), ("mgr-2", False)]
    monkeypatch.setattr(enrollctl.Context, "client", property(lambda self: FakeAdminClient(ctl)))
    shown = CliRunner().invoke(enrollctl.main, ["--config", "/dev/null",
                                                "cluster"]).output
    assert "Controllers: mgr-1; not heard from lately: mgr-2 (100 s ago)" in shown


def test_enrollctl_baseline_says_what_the_watchdog_did(
        ctl: Controller, api: FakeDockerAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    from .test_reconcile import pending_task

    monkeypatch.setattr(enrollctl.Context, "client", property(lambda self: FakeAdminClient(ctl)))
    reconciler = ctl.app.extensions["swarm_enroll"].baseline
    reconciler.reconcile("start")
    pending_task(api, "nginx", age=120)
    reconciler.watch_stuck()
    out = CliRunner().invoke(enrollctl.main, ["--config", "/dev/null",
                                              "baseline"]).output
    assert "nginx: stuck: task stuck-nginx pending for 12" in out
    assert "pi-1, pi-2 could run it; forced an update" in out
