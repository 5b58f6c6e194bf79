"""Zero-touch enrollment, end to end, on the simulated reference cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from agent.wire.mdns import NODE_SERVICE
from controller.keeper import LABEL as KEEPER_LABEL
from controller.keeper import PROMOTED
from controller.openapi import PATHS
from deploy.lab.demo import admin_client, swarm_nodes, wait_for

from .conftest import Cluster, wait_log

pytestmark = pytest.mark.lab

WRONG_PIN = "sha256:" + "ab" * 32


def records(cluster: Cluster, hostname: str) -> list[dict]:
    return [n for n in cluster.admin.nodes() if n["hostname"].lower() == hostname.lower()]


def last_seen_anywhere(cluster: Cluster, hostname: str) -> float:
    """When the Pi last asked any controller of the cluster."""
    return max(n["last_seen"] for c in cluster.lab.status()["controllers"]
               for n in admin_client(cluster.lab, c["name"]).nodes()
               if n["hostname"].lower() == hostname.lower())


def test_demo_builds_the_reference_cluster(cluster: Cluster) -> None:
    nodes = {n["hostname"]: n for n in swarm_nodes(cluster.lab, "PiLike-01")}
    assert sorted(nodes) == [f"PiLike-0{i}" for i in range(1, 9)]
    assert all(n["state"] == "ready" for n in nodes.values())
    managers = sorted(h for h, n in nodes.items() if n["role"] == "manager")
    # two Zero W managers by rule, and a Pi 3 the quorum keeper promoted (managers = 3)
    assert managers == ["PiLike-01", "PiLike-02", "PiLike-03"]
    assert all(nodes[m]["reachability"] == "reachable" for m in managers)
    assert nodes["PiLike-03"]["labels"][KEEPER_LABEL] == PROMOTED
    joined = [n for n in cluster.admin.nodes() if n["state"] == "joined"]
    assert sorted(n["hostname"] for n in joined) == sorted(nodes)
    assert any("Approving PiLike-02" in line for line in cluster.said)


def test_worker_with_bootstrap_token_joins_on_its_own(cluster: Cluster) -> None:
    for name in ("PiLike-03", "PiLike-08"):
        events = cluster.admin.audit(hostname=name)
        approvals = [e for e in events if e["action"] == "node.approve"]
        assert len(approvals) == 1 and approvals[0]["actor"].startswith("token:")
        assert not any(e["actor"].startswith("admin:") for e in events)
    labels = {n["hostname"]: n["labels"] for n in swarm_nodes(cluster.lab, "PiLike-01")}
    assert labels["PiLike-08"] == {"pi.model": "3b"}
    assert labels["PiLike-03"] == {"pi.model": "3b", KEEPER_LABEL: PROMOTED}  # and a manager


def test_manual_manager_waits_for_the_admin_then_is_promoted(cluster: Cluster) -> None:
    events = list(reversed(cluster.admin.audit(hostname="PiLike-02")))
    actions = [(e["action"], e["actor"].split(":")[0]) for e in events]
    assert actions == [("node.request", "agent"), ("node.approve", "admin"),
                       ("node.joined", "agent")]
    log = cluster.agent_log("PiLike-02")
    assert log.index(": pending") < log.index(": approved") < log.index(": joined")
    node = next(n for n in swarm_nodes(cluster.lab, "PiLike-01") if n["hostname"] == "PiLike-02")
    assert (node["role"], node["reachability"]) == ("manager", "reachable")
    assert node["labels"] == {"pi.model": "zero-w"}


def test_pi_without_token_stays_pending_until_approved(cluster: Cluster) -> None:
    log = cluster.add_pi("PiLike-24")  # token rule, but no token: waits like manual
    wait_for("PiLike-24 pending", lambda: [r for r in records(cluster, "PiLike-24")
                                           if r["state"] == "pending"], 60)
    first_seen = last_seen_anywhere(cluster, "PiLike-24")
    # It keeps asking, and keeps being told to wait: no grant without an approval. (Each
    # controller knows when a Pi last asked it: the agent may ask another than the admin's.)
    wait_for("more requests", lambda: last_seen_anywhere(cluster, "PiLike-24") > first_seen,
             60, interval=0.5)
    assert records(cluster, "PiLike-24")[0]["state"] == "pending"
    assert "approved" not in log.read_text()
    assert "PiLike-24" not in {n["hostname"] for n in swarm_nodes(cluster.lab, "PiLike-01")}
    # the admin compares the key fingerprint the Pi shows with the one waiting, then
    # approves that very claim
    agent_id = cluster.lab.exec("PiLike-24", [str(Path(sys.executable).parent / "enroll-agent"),
                                              "id", "--config",
                                              str(cluster.lab.pi_dir("PiLike-24") /
                                                  "agent.toml")],
                                capture_output=True, timeout=60)
    shown = json.loads(agent_id.stdout)
    (waiting,) = records(cluster, "PiLike-24")
    assert shown["fingerprint"] == waiting["fingerprint"] and shown["agent_id"] == \
        waiting["agent_id"]
    assert f"key fingerprint {shown['fingerprint']}" in log.read_text()
    cluster.admin.approve("PiLike-24", fingerprint=shown["fingerprint"])
    wait_log(log, ": joined")
    node = next(n for n in swarm_nodes(cluster.lab, "PiLike-01") if n["hostname"] == "PiLike-24")
    assert (node["state"], node["role"], node["labels"]) == ("ready", "worker",
                                                            {"pi.model": "3b"})


def test_rejected_pi_never_joins(cluster: Cluster) -> None:
    log = cluster.add_pi("PiLike-21")
    wait_for("PiLike-21 pending", lambda: [r for r in records(cluster, "PiLike-21")
                                           if r["state"] == "pending"], 60)
    cluster.admin.reject("PiLike-21", reason="not one of ours")
    wait_log(log, "rejected")
    (record,) = records(cluster, "PiLike-21")
    assert record["state"] == "rejected" and record["reason"] == "not one of ours"
    assert "approved" not in log.read_text()
    assert "PiLike-21" not in {n["hostname"] for n in swarm_nodes(cluster.lab, "PiLike-01")}
    swarm = cluster.lab.docker("PiLike-21").info()["Swarm"]
    assert swarm["LocalNodeState"] == "inactive"


def test_hostname_without_rule_is_rejected_with_the_reason(cluster: Cluster) -> None:
    log = cluster.add_pi("stranger-1", token="lab")
    wait_log(log, "no hostname rule matches 'stranger-1'")
    # nothing is stored for a name no rule takes: the admin sees it only as heard over mDNS
    seen = wait_for("stranger-1 heard as rejected", lambda: [
        r for r in records(cluster, "stranger-1") if r.get("agent_state") == "rejected"], 30)
    assert [r["state"] for r in records(cluster, "stranger-1")] == ["seen"] == \
        [r["state"] for r in seen]
    assert cluster.lab.docker("stranger-1").info()["Swarm"]["LocalNodeState"] == "inactive"


def test_agent_with_wrong_pin_refuses_the_controller(cluster: Cluster) -> None:
    log_mdns = cluster.add_pi("PiLike-22", token="lab", agent_settings={"ca_pin": WRONG_PIN})
    log_static = cluster.add_pi("PiLike-23", token="lab", agent_settings={
        "ca_pin": WRONG_PIN, "controller_url": cluster.status["controller_url"],
        "mdns": False})
    wait_log(log_mdns, "ignoring controller 'PiLike-01': it holds CA")
    wait_log(log_static, "pin_mismatch")
    assert records(cluster, "PiLike-23") == []
    # The controller never heard a request from PiLike-22, but saw it over mDNS:
    seen = wait_for("PiLike-22 listed as seen", lambda: [
        r for r in records(cluster, "PiLike-22") if r["state"] == "seen"], 30)
    assert seen[0]["agent_state"] == "new" and seen[0]["id"] == ""
    for name in ("PiLike-22", "PiLike-23"):
        assert cluster.lab.docker(name).info()["Swarm"]["LocalNodeState"] == "inactive"


def test_agent_restart_needs_no_second_record_or_approval(cluster: Cluster) -> None:
    log = cluster.lab.log_path("PiLike-02", "agent")
    before = log.read_text().count(": joined")
    cluster.lab.restart_agent("PiLike-02")
    wait_for("the restarted agent to report joined",
             lambda: log.read_text().count(": joined") > before, 60, interval=0.3)
    assert len(records(cluster, "PiLike-02")) == 1
    approvals = [e for e in cluster.admin.audit(hostname="PiLike-02")
                 if e["action"] == "node.approve"]
    assert len(approvals) == 1


def test_admin_endpoints_need_the_admin_token(cluster: Cluster) -> None:
    url, ca = cluster.status["controller_url"], cluster.status["ca"]
    admin_paths = [(m, p) for p, ops in PATHS.items() for m, op in ops.items()
                   if op.get("security")]
    assert len(admin_paths) >= 8
    session = requests.Session()
    session.trust_env = False
    for method, path in admin_paths:
        concrete = path.replace("{ref}", "PiLike-03").replace("{token_id}", "tok_x")
        for headers in ({}, {"Authorization": "Bearer sea_wrong"}):
            r = session.request(method.upper(), url + concrete, verify=ca, headers=headers,
                                timeout=10)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"] == "unauthorized"
    assert session.get(url + "/healthz", verify=ca, timeout=10).status_code == 200


def test_enrollctl_against_the_lab(cluster: Cluster) -> None:
    status = cluster.status
    env = {**os.environ, "ENROLLCTL_URL": status["controller_url"],
           "ENROLLCTL_PIN": status["pin"], "ENROLLCTL_TOKEN": status["admin_token"],
           "XDG_CACHE_HOME": str(cluster.lab.state_dir / "enrollctl-cache")}
    enrollctl = str(Path(sys.executable).parent / "enrollctl")
    out = subprocess.run([enrollctl, "--json", "nodes", "--state", "joined"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert {f"PiLike-0{i}" for i in range(1, 9)} <= {n["hostname"]
                                                      for n in json.loads(out.stdout)}
    table = subprocess.run([enrollctl, "nodes"], env=env, capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert table.splitlines()[0].split()[:3] == ["HOSTNAME", "STATE", "ROLE"]
    bad = subprocess.run([enrollctl, "nodes"], env={**env, "ENROLLCTL_TOKEN": "sea_nope"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("Error: unauthorized:")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    wrong_pin = subprocess.run([enrollctl, "--pin", WRONG_PIN, "nodes"], env=env,
                               capture_output=True, text=True, timeout=60)
    assert wrong_pin.returncode == 1 and "pin_mismatch" in wrong_pin.stderr


_BROWSE = """
import json, sys, time
from zeroconf import Zeroconf, ServiceBrowser
zc = Zeroconf(interfaces=[sys.argv[1]])
names = []
ServiceBrowser(zc, sys.argv[2], handlers=[lambda zeroconf, service_type, name, state_change:
               names.append(name)])
time.sleep(3)
out = {}
for name in set(names):
    info = zc.get_service_info(sys.argv[2], name, timeout=3000)
    if info:
        out[name] = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
zc.close()
print(json.dumps(out))
"""


def test_pis_announce_their_state_over_mdns_without_secrets(cluster: Cluster) -> None:
    """Browsed from inside a lab Pi, as any client on the Pis' LAN would."""
    ip = next(n["ip"] for n in cluster.status["nodes"] if n["name"] == "PiLike-08")
    out = cluster.lab.exec("PiLike-08", [sys.executable, "-c", _BROWSE, ip, NODE_SERVICE],
                           capture_output=True, timeout=60)
    ads = json.loads(out.stdout)
    txt = ads[f"PiLike-04.{NODE_SERVICE}"]
    record = records(cluster, "PiLike-04")[0]
    assert txt["state"] == "joined" and txt["role"] == "worker"
    assert txt["id"] == record["agent_id"] and txt["hw"] == "00000000a1b2c304"
    ctl = cluster.lab.exec("PiLike-08", [sys.executable, "-c", _BROWSE, ip,
                                         "_swarm-enroll._tcp.local."], capture_output=True,
                           timeout=60)
    controllers = json.loads(ctl.stdout)  # every manager's
    assert controllers
    for controller in controllers.values():
        assert controller["ca"] == cluster.status["pin"] and controller["v"] == "1"
    blob = out.stdout + ctl.stdout
    assert "SWMTKN-" not in blob and "seb_" not in blob and "sea_" not in blob


def test_no_join_token_in_any_log_or_answer(cluster: Cluster) -> None:
    """Runs last in this module: every journey above has written its logs by now."""
    texts = []
    for path in cluster.lab.state_dir.rglob("*.log"):
        if path.name != "dockerd.log":
            texts.append(path.read_text(errors="replace"))
    assert len(texts) >= 12  # the controller's and every agent's log, at least
    for node in cluster.admin.nodes():
        if node["id"]:
            texts.append(json.dumps(cluster.admin.node(node["id"])))
    texts.append(json.dumps(cluster.admin.nodes()))
    texts.append(json.dumps(cluster.admin.audit(limit=1000)))
    texts.append(json.dumps(cluster.admin.tokens()))
    for text in texts:
        assert "SWMTKN-" not in text
        assert "seb_" not in text
