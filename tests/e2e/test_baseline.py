"""Baseline services on the simulated reference cluster: viz and nginx, kept true.

The tests run in file order on one demo cluster (module-scoped) and build on each other:
the cluster first as the demo leaves it (three managers, one of them promoted by the
quorum keeper, and five workers), then hand edits, bad files, rolling updates and
rollbacks, concurrent applies, and last the membership changes (a fourth manager joins
and the keeper demotes its own, a worker dies).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.client import ControllerClient
from agent.swarm import connect, join
from agent.wire.errors import WireError
from agent.wire.jws import verify_grant
from agent.wire.keys import ca_public_key, load_or_create_agent_key, thumbprint
from agent.wire.messages import EnrollmentRequest
from controller.baseline.desired import HASH_LABEL, OWNER_LABEL
from controller.baseline.reconcile import Reconciler
from controller.dockerapi import DockerAPI
from deploy.lab import procs
from deploy.lab.demo import admin_client, epilogue, wait_for
from deploy.lab.lab import LabError
from tests.unixhttp import request

from .conftest import REPO, Cluster

pytestmark = pytest.mark.lab

MANAGERS = ["PiLike-01", "PiLike-02", "PiLike-03"]  # PiLike-03: the quorum keeper's
WORKERS = [f"PiLike-0{i}" for i in range(4, 9)]
LAB_BASELINE = REPO / "deploy" / "lab" / "baseline.yml"
STANDIN = "swarm-enroll lab stand-in"


def controller_dir(cluster: Cluster) -> Path:
    return Path(cluster.lab.state()["controller"]["state_dir"])


def baseline_file(cluster: Cluster) -> Path:
    return controller_dir(cluster) / "baseline.yml"


def row(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in status["services"] if s["name"] == name)


def docker_api(cluster: Cluster, pi: str = "PiLike-01") -> Any:
    return cluster.lab.docker(pi).api


def running_tasks(cluster: Cluster, service: str) -> Counter[str]:
    """Running tasks of a service per node hostname, as Docker itself says."""
    api = docker_api(cluster)
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    tasks = api.tasks(filters={"service": service, "desired-state": "running"})
    return Counter(names[t["NodeID"]] for t in tasks if t["Status"]["State"] == "running")


def inspect(cluster: Cluster, service: str) -> dict[str, Any]:
    return docker_api(cluster).inspect_service(service)


def snapshot(cluster: Cluster) -> dict[str, tuple[int, str]]:
    """Every service's version and spec."""
    return {s["Spec"]["Name"]: (s["Version"]["Index"], repr(s["Spec"]))
            for s in docker_api(cluster).services()}


def http_get(cluster: Cluster, from_pi: str, url: str) -> str:
    done = cluster.lab.exec(from_pi, ["busybox", "wget", "-qO-", url], capture_output=True,
                            timeout=20)
    return done.stdout if done.returncode == 0 else f"(failed: {done.stderr.strip()})"


def wait_converged(cluster: Cluster, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = cluster.admin.baseline()
        return status if status["converged"] else None
    return wait_for("the baseline to converge", check, timeout)


def edit_file(cluster: Cluster, edit: Any) -> None:
    """Load the controller's baseline file, let `edit` change the dict, write it back."""
    path = baseline_file(cluster)
    doc = yaml.safe_load(path.read_text())
    edit(doc["services"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def enrollctl_env(cluster: Cluster) -> dict[str, str]:
    status = cluster.status
    return {**os.environ, "ENROLLCTL_URL": status["controller_url"],
            "ENROLLCTL_CA_FILE": status["ca"], "ENROLLCTL_TOKEN": status["admin_token"],
            "ENROLLCTL_CONFIG": "/dev/null"}


def enrollctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "enrollctl")
    return subprocess.run([exe, *args], env=enrollctl_env(cluster), capture_output=True,
                          text=True, timeout=60)


# ---- the cluster as the demo leaves it -------------------------------------------------


def test_demo_ends_with_viz_and_nginx_converged(cluster: Cluster) -> None:
    assert any(line.startswith("viz: 3/3 tasks running on PiLike-01, PiLike-02, PiLike-03")
               for line in cluster.said), cluster.said
    assert any(line.startswith("nginx: 5/5 tasks running on") for line in cluster.said)
    assert running_tasks(cluster, "viz") == Counter(MANAGERS)  # one per manager, no worker
    assert running_tasks(cluster, "nginx") == Counter(WORKERS)
    status = cluster.admin.baseline()
    assert status["converged"] and status["file_error"] == ""
    viz, nginx = row(status, "viz"), row(status, "nginx")
    assert (viz["desired_tasks"], viz["running_tasks"], viz["nodes"]) == (3, 3, MANAGERS)
    assert (nginx["desired_tasks"], nginx["running_tasks"], nginx["nodes"]) == (5, 5, WORKERS)
    assert viz["ports"] == [{"published": 8080, "target": 8080, "protocol": "tcp",
                             "mode": "host"}]
    for svc in (viz, nginx):
        assert svc["in_sync"] and svc["error"] == "" and svc["hash"] == svc["desired_hash"]
        assert svc["last_result"]["result"] in ("created", "updated", "unchanged")
        spec = inspect(cluster, svc["name"])["Spec"]
        assert spec["Labels"][OWNER_LABEL] == "true" and spec["Labels"][HASH_LABEL]
    # created at the controller's start; the eight joins and the promotions changed no
    # service: one task per manager / per worker is Swarm's own job (global mode)
    events = cluster.admin.audit(action="baseline.created")
    assert {e["reason"].split(":")[0] for e in events} == {"viz", "nginx"}
    assert [e["action"] for e in cluster.admin.audit() if e["action"].startswith("baseline.")
            ] == ["baseline.created", "baseline.created"]


def test_published_ports_answer_from_another_pi(cluster: Cluster) -> None:
    ips = {n["name"]: n["ip"] for n in cluster.status["nodes"]}
    for manager in MANAGERS:
        assert STANDIN in http_get(cluster, "PiLike-05", f"http://{ips[manager]}:8080/")
    for worker in ("PiLike-04", "PiLike-08"):
        assert STANDIN in http_get(cluster, "PiLike-01", f"http://{ips[worker]}:80/")
    text = epilogue(cluster.lab, cluster.config)
    assert f"http://{ips['PiLike-01']}:8080/" in text and f"http://{ips['PiLike-06']}:80/" in text
    command = next(line for line in text.splitlines() if "busybox wget" in line)
    argv = shlex.split(command.split(":", 1)[1])
    done = subprocess.run([str(REPO / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0 and STANDIN in done.stdout, done.stderr


def viz_socket_dir(cluster: Cluster) -> Path:
    return cluster.lab.daemon_spec(cluster.config.controller or "").viz_socket_dir


def viz_pids(cluster: Cluster) -> dict[str, int]:
    """The host pid of each manager's running viz container."""
    pids = {}
    for node in cluster.status["nodes"]:
        if node["running"]:
            for c in cluster.lab.docker(node["name"]).containers.list(
                    filters={"label": "com.docker.swarm.service.name=viz"}):
                pids[node["name"]] = c.attrs["State"]["Pid"]
    return pids


def test_viz_mounts_only_the_controllers_filtered_socket(cluster: Cluster) -> None:
    """viz never sees a Docker socket: only the controller's read-only, filtered API."""
    socket_dir = viz_socket_dir(cluster)
    spec = inspect(cluster, "viz")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Mounts"] == [{"Type": "bind", "Source": str(socket_dir), "Target": "/var/run",
                               "ReadOnly": True}]
    for pi in MANAGERS:
        (container,) = cluster.lab.docker(pi).containers.list(
            filters={"label": "com.docker.swarm.service.name=viz"})
        assert [(m["Type"], m["Source"], m["Destination"], m["RW"])
                for m in container.attrs["Mounts"]] == [("bind", str(socket_dir), "/var/run",
                                                          False)]
    # What the visualizer's server dials, through its own (read-only) mount.
    pids = viz_pids(cluster)
    assert sorted(pids) == MANAGERS
    for pi, pid in pids.items():
        status, nodes = request(Path(f"/proc/{pid}/root/var/run/docker.sock"), "/nodes")
        assert status == 200, pi
        assert sorted(n["Description"]["Hostname"] for n in nodes) == sorted(MANAGERS + WORKERS)


def test_the_viz_socket_answers_what_viz_draws_and_refuses_the_rest(cluster: Cluster) -> None:
    sock = viz_socket_dir(cluster) / "docker.sock"
    tokens = docker_api(cluster).inspect_swarm()["JoinTokens"]
    answers = {}
    for target in ("/nodes", "/services", "/tasks", "/v1.41/nodes"):
        status, answers[target] = request(sock, target)
        assert status == 200, target
    text = json.dumps(answers)
    assert tokens["Worker"] not in text and tokens["Manager"] not in text
    assert "SWMTKN" not in text and "BEGIN CERTIFICATE" not in text and "TLSInfo" not in text
    assert {s["Spec"]["Name"] for s in answers["/services"]} == {"viz", "nginx"}
    assert {t["ServiceID"] for t in answers["/tasks"]} == {s["ID"] for s in answers["/services"]}
    for method, target in [("GET", "/swarm"), ("GET", "/v1.41/swarm"), ("GET", "/secrets"),
                           ("GET", "/configs"), ("GET", "/containers/json"), ("GET", "/info"),
                           ("GET", "/tasks%3Ffilters=x"), ("GET", "/nodes/../swarm"),
                           ("POST", "/swarm/leave?force=1"), ("DELETE", "/services/nginx")]:
        status, body = request(sock, target, method)
        assert (status, body["error"]) == (403, "forbidden"), (method, target)
    assert docker_api(cluster).inspect_swarm()["JoinTokens"] == tokens
    assert {s["Spec"]["Name"] for s in docker_api(cluster).services()} == {"viz", "nginx"}


def test_cluster_health_says_three_managers_tolerate_one(cluster: Cluster) -> None:
    health = cluster.admin.cluster()
    assert health["managers"]["total"] == 3 and health["managers"]["by_state"] == {"ready": 3}
    assert health["workers"]["total"] == 5
    assert health["workers"]["by_availability"] == {"active": 5}
    assert health["leader"]["hostname"] == "PiLike-01"
    raft = health["raft"]
    assert (raft["quorum"], raft["fault_tolerance"]) == (2, 1)
    assert "so the swarm tolerates 1 manager failure" in raft["summary"]
    assert raft["recommendation"] == "an odd number of managers: good"
    tasks = {s["name"]: s for s in health["services"]}
    assert (tasks["viz"]["running"], tasks["nginx"]["running"]) == (3, 5)
    assert tasks["viz"]["baseline"]
    assert (health["keeper"]["enabled"], health["keeper"]["managers"]) == (True, 3)
    out = enrollctl(cluster, "cluster")
    assert out.returncode == 0, out.stderr
    assert "Leader: PiLike-01" in out.stdout and "tolerates 1 manager failure" in out.stdout
    assert "Recommendation: an odd number of managers: good" in out.stdout
    assert "Quorum keeper: on, keeps 3 managers" in out.stdout


# ---- ownership and bad files ------------------------------------------------------------


def test_a_hand_made_service_is_untouched_by_apply(cluster: Cluster) -> None:
    api = docker_api(cluster)
    api.create_service({"ContainerSpec": {"Image": "busybox:latest"},
                        "Placement": {"Constraints": ["node.role==worker"]}},
                       name="handmade", labels={"team": "ops"},
                       mode={"Replicated": {"Replicas": 1}})
    try:
        before = snapshot(cluster)
        out = enrollctl(cluster, "baseline", "apply")
        assert out.returncode == 0, out.stderr
        assert "handmade" not in out.stdout
        assert "viz" in out.stdout and "unchanged" in out.stdout
        after = snapshot(cluster)
        assert after["handmade"] == before["handmade"]
        assert after == before  # and nothing else needed a change either
        assert "handmade" not in {s["name"] for s in cluster.admin.baseline()["services"]}
        health = {s["name"]: s for s in cluster.admin.cluster()["services"]}
        assert not health["handmade"]["baseline"] and health["nginx"]["baseline"]
    finally:
        api.remove_service("handmade")


BAD_FILES = [
    # (edit of the services, service and key the error names)
    (lambda s: s["nginx"].update(image="nginx:other", restart="always"), "nginx", "restart"),
    (lambda s: s["viz"]["deploy"]["placement"].update(constraints=["node.role=manager"]),
     "viz", "deploy.placement.constraints[0]"),
    (lambda s: s["nginx"]["ports"][0].update(published=70000), "nginx", "ports[0].published"),
]


def test_invalid_files_are_refused_and_change_nothing(cluster: Cluster) -> None:
    path = baseline_file(cluster)
    good = path.read_text()
    before = snapshot(cluster)
    try:
        for edit, service, key in BAD_FILES:
            path.write_text(good)
            edit_file(cluster, edit)
            with pytest.raises(WireError) as err:
                cluster.admin.baseline_apply()
            assert (err.value.status, err.value.code) == (422, "baseline_invalid")
            assert f"service {service!r}" in err.value.message
            assert f"key {key!r}" in err.value.message
            status = cluster.admin.baseline()
            assert f"key {key!r}" in status["file_error"] and not status["converged"]
        path.write_text(good.replace("services:", "services:\n  nginx: [", 1))
        with pytest.raises(WireError) as err:
            cluster.admin.baseline_apply()
        assert err.value.code == "baseline_invalid" and "not valid YAML: line" in \
            err.value.message
        # an uploaded bad file is refused before it replaces the good one
        path.write_text(good)
        bad = good.replace("mode: host", "mode: bridge", 1)
        with pytest.raises(WireError) as err:
            cluster.admin.baseline_apply(file_text=bad)
        assert err.value.code == "baseline_invalid" and "ports[0].mode" in err.value.message
        assert path.read_text() == good
        out = enrollctl(cluster, "baseline", "apply", "--file", str(LAB_BASELINE.parent /
                                                                    "rules.toml"))
        assert out.returncode == 1 and "baseline_invalid" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    finally:
        path.write_text(good)
    assert snapshot(cluster) == before


# ---- rolling updates and rollbacks --------------------------------------------------------


def tag_standin_everywhere(cluster: Cluster, tag: str) -> None:
    for node in cluster.status["nodes"]:
        if node["running"]:
            client = cluster.lab.docker(node["name"])
            try:
                client.images.get("nginx:latest").tag("nginx", tag)
            finally:
                client.close()


def nginx_update_state(cluster: Cluster) -> str:
    return (inspect(cluster, "nginx").get("UpdateStatus") or {}).get("State", "")


def test_image_change_rolls_and_a_bad_image_rolls_back(cluster: Cluster) -> None:
    tag_standin_everywhere(cluster, "rolled")
    edit_file(cluster, lambda s: s["nginx"].update(image="nginx:rolled"))
    report = cluster.admin.baseline_apply()
    nginx = next(r for r in report["results"] if r["service"] == "nginx")
    assert (nginx["result"], nginx["message"]) == ("updated", "image nginx:latest -> nginx:rolled")
    assert next(r for r in report["results"] if r["service"] == "viz")["result"] == "unchanged"
    wait_for("the rolling update to complete",
             lambda: nginx_update_state(cluster) == "completed", 90)
    status = wait_converged(cluster)
    assert row(status, "nginx")["image"] == "nginx:rolled"
    assert running_tasks(cluster, "nginx") == Counter(WORKERS)

    edit_file(cluster, lambda s: s["nginx"].update(image="nginx:no-such-tag"))
    report = cluster.admin.baseline_apply()
    assert next(r for r in report["results"] if r["service"] == "nginx")["result"] == "updated"
    wait_for("Docker to roll the bad image back",
             lambda: nginx_update_state(cluster) == "rollback_completed", 120)
    spec = inspect(cluster, "nginx")["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "nginx:rolled"
    wait_for("nginx running again everywhere",
             lambda: running_tasks(cluster, "nginx") == Counter(WORKERS), 60)
    status = cluster.admin.baseline()
    nginx_row = row(status, "nginx")
    assert "rolled back" in nginx_row["error"] and "nginx:no-such-tag" in nginx_row["error"]
    assert "No such image" in nginx_row["error"] or "No such image" in nginx_row["task_error"]
    assert nginx_row["update"]["state"] == "rollback_completed"
    # applying the same bad file again does not roll it out a second time
    version = inspect(cluster, "nginx")["Version"]["Index"]
    report = cluster.admin.baseline_apply()
    again = next(r for r in report["results"] if r["service"] == "nginx")
    assert again["result"] == "error" and "rolled back" in again["message"]
    assert not report["ok"]
    assert inspect(cluster, "nginx")["Version"]["Index"] == version
    # back to the running image: nothing to do
    edit_file(cluster, lambda s: s["nginx"].update(image="nginx:rolled"))
    report = cluster.admin.baseline_apply()
    assert report["ok"] and {r["result"] for r in report["results"]} == {"unchanged"}


def test_concurrent_applies_end_with_one_spec_and_no_error(cluster: Cluster) -> None:
    since = time.time()
    edit_file(cluster, lambda s: s["nginx"]["deploy"]["update_config"].update(delay="2s"))
    # another controller on the other manager, reconciling the same file at the same time
    rival = Reconciler(DockerAPI(cluster.lab.docker_host("PiLike-02")), baseline_file(cluster))
    reports: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def by_api() -> None:
        try:
            admin = admin_client(cluster.lab)
            start.wait()
            reports.append(admin.baseline_apply())
        except BaseException as exc:
            errors.append(exc)

    def by_rival() -> None:
        try:
            start.wait()
            reports.append(rival.reconcile("rival controller").to_json())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=by_api) for _ in range(4)]
    threads.append(threading.Thread(target=by_rival))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(reports) == 5 and all(r["ok"] for r in reports), reports
    outcomes = Counter(r["result"] for rep in reports for r in rep["results"]
                       if r["service"] == "nginx")
    assert set(outcomes) <= {"updated", "unchanged"}, outcomes
    # The controller also reads its file every few seconds and may have applied the edit
    # itself, first: one update in all, whoever made it (the rival writes no audit row).
    audited = [e for e in cluster.admin.audit(action="baseline.updated", since=since)
               if e["reason"].startswith("nginx:")]
    rival = [r["result"] for rep in reports if rep["trigger"] == "rival controller"
             for r in rep["results"] if r["service"] == "nginx"]
    assert len(audited) + rival.count("updated") == 1, (outcomes, audited)
    spec = inspect(cluster, "nginx")["Spec"]
    assert spec["UpdateConfig"]["Delay"] == 2_000_000_000
    status = cluster.admin.baseline()
    assert row(status, "nginx")["in_sync"]
    assert row(status, "nginx")["hash"] == row(status, "nginx")["desired_hash"]


# ---- membership changes -------------------------------------------------------------------


def scripted_agent(cluster: Cluster, name: str, tmp: Path) -> tuple[ControllerClient, Any]:
    """The agent of a bare lab Pi, driven step by step by the test (so that it can be held
    between its join and its report)."""
    ctl = cluster.lab.state()["controller"]
    key = load_or_create_agent_key(tmp / "agent-key.pem")
    ca = cluster.lab.ca_file
    return ControllerClient(ctl["url"], ca, key), key


def test_a_worker_promoted_mid_scale_up_changes_no_service(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """Issue 9, on purpose: a manager-to-be joins as a worker, is seen as one while the
    services scale up (a task of nginx lands on it: host port 80, one per node), and only
    then is promoted. Counting workers, the controller scaled nginx 6 -> 7 -> 6 while Swarm
    was placing tasks, and one task could stay pending beside a free worker for good.
    Written in the first dialect (`replicas: workers`), nginx is a global service now:
    nobody changes its spec, Swarm moves the task, and everything converges."""
    edit_file(cluster, lambda svcs: svcs["nginx"].update(image="nginx:latest"))  # every Pi
    cluster.admin.baseline_apply()  # has this one; the tests above tagged others
    wait_converged(cluster)
    edit_file(cluster, lambda svcs: svcs["nginx"]["deploy"].update(
        {"mode": "replicated", "replicas": "workers"}))
    applied = cluster.admin.baseline_apply()
    assert {r["service"]: r["result"] for r in applied["results"]}["nginx"] == "unchanged"
    rules = controller_dir(cluster) / "rules.toml"
    rules.write_text('[[rule]]\nmatch = "PiMgr-*"\nrole = "manager"\napprove = "token"\n\n'
                     + rules.read_text())
    versions = {name: inspect(cluster, name)["Version"]["Index"] for name in ("viz", "nginx")}
    pi = cluster.lab.add_pi("PiMgr-03", manager=True, agent=False)
    client, key = scripted_agent(cluster, "PiMgr-03", tmp_path)
    docker = cluster.lab.docker("PiMgr-03")
    try:
        request = EnrollmentRequest(
            hostname="PiMgr-03", hardware_id=pi["hardware_id"], addresses=[pi["ip"]],
            bootstrap_token=cluster.lab.state()["controller"]["token"])
        answer = client.enroll(request.to_json())
        assert (answer["status"], answer["role"]) == ("approved", "manager")
        ca = (controller_dir(cluster) / "ca.pem").read_bytes()
        grant = verify_grant(answer["grant"], ca_public_key(ca), thumbprint(key), "PiMgr-03")
        node_id = join(connect(cluster.lab.docker_host("PiMgr-03")), grant, pi["ip"])
        joined_at = time.time()
        # a worker for now: nginx (one per worker) runs a task on it, as Swarm sees fit
        try:
            wait_for("an nginx task on the worker-to-be-promoted",
                     lambda: running_tasks(cluster, "nginx")["PiMgr-03"] == 1, 60)
        except LabError as exc:
            tasks = [(t.get("NodeID", "")[:6], t["DesiredState"], t["Status"])
                     for t in docker_api(cluster).tasks(filters={"service": "nginx"})]
            raise AssertionError(f"{exc}: {inspect(cluster, 'nginx')}; {tasks}") from None
        # the controller has looked at the nodes with it as a worker (today's code scaled
        # nginx 6 -> 7 here, counting it)
        wait_for("a reconcile after the join", lambda: (
            cluster.admin.baseline()["last_reconcile"] or {}).get("finished", 0) > joined_at,
            60)
        assert client.joined(answer["id"], node_id)["status"] == "joined"  # promoted now
    finally:
        client.close()
        docker.close()

    # four managers, three wanted: the quorum keeper demotes the one it promoted
    managers, workers = ["PiLike-01", "PiLike-02", "PiMgr-03"], ["PiLike-03", *WORKERS]

    def settled() -> dict[str, Any] | None:
        status = cluster.admin.baseline()
        return status if status["converged"] and row(status, "viz")["nodes"] == managers \
            and row(status, "nginx")["nodes"] == workers else None

    wait_for("viz on the three managers left, nginx on the six workers", settled, 120)
    assert running_tasks(cluster, "viz") == Counter(managers)
    assert running_tasks(cluster, "nginx") == Counter(workers)  # a manager: no nginx there
    demoted = cluster.admin.audit(action="quorum.demote", since=joined_at)
    assert [e["hostname"] for e in demoted] == ["PiLike-03"]
    assert "PiLike-03, promoted by the keeper, is one too many" in demoted[0]["reason"]
    assert {name: inspect(cluster, name)["Version"]["Index"] for name in ("viz", "nginx")} \
        == versions, "a join, a promotion or a demotion made the controller change a service"
    pending = [t for t in docker_api(cluster).tasks(filters={"service": "nginx"})
               if t["DesiredState"] == "running" and t["Status"]["State"] != "running"]
    assert pending == []
    ip = cluster.lab.node("PiMgr-03")["ip"]
    assert STANDIN in http_get(cluster, "PiLike-04", f"http://{ip}:8080/")
    raft = cluster.admin.cluster()["raft"]
    assert (raft["managers"], raft["fault_tolerance"]) == (3, 1)
    assert raft["recommendation"] == "an odd number of managers: good"


def test_a_worker_dies_and_the_per_worker_service_follows(cluster: Cluster) -> None:
    cluster.lab.kill_pi("PiLike-08")

    def five() -> dict[str, Any] | None:
        nginx = row(cluster.admin.baseline(), "nginx")
        return nginx if nginx["desired_tasks"] == 5 and nginx["running_tasks"] == 5 else None

    nginx = wait_for("nginx on the five workers left", five, 120)
    left = ["PiLike-03", *WORKERS[:-1]]  # PiLike-03: a worker again since the test above
    assert nginx["nodes"] == left
    assert running_tasks(cluster, "nginx") == Counter(left)
    status = wait_converged(cluster, 60)
    assert row(status, "viz")["running_tasks"] == 3


def test_a_restarted_controllers_socket_reaches_the_running_viz_tasks(cluster: Cluster) -> None:
    pids = viz_pids(cluster)
    assert {"PiLike-01", "PiLike-02"} <= set(pids)  # PiMgr-03 too (and PiLike-03 no more),
    # when the whole module runs
    sock = viz_socket_dir(cluster) / "docker.sock"
    name = cluster.lab.state()["controller"]["name"]
    pid = cluster.lab.controller_pid(name)
    assert pid is not None
    agent = cluster.lab.node(name)["agent_pid"]
    os.kill(agent, signal.SIGSTOP)  # its agent would start the controller again at once
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for("the controller to stop", lambda: not procs.alive(pid), 30)
        assert not sock.exists()  # it removes its socket on the way out
    finally:
        os.kill(agent, signal.SIGCONT)
    # the agent brings its manager's controller back
    wait_for("the viz socket back", lambda: sock.exists(), 60)
    assert cluster.lab.controller_pid(name) not in (None, pid)
    assert viz_pids(cluster) == pids  # the same containers, never restarted
    names = {n["Description"]["Hostname"] for n in docker_api(cluster).nodes()}
    for pi, pid in pids.items():
        status, nodes = request(Path(f"/proc/{pid}/root/var/run/docker.sock"), "/nodes")
        assert status == 200 and {n["Description"]["Hostname"] for n in nodes} == names, pi
