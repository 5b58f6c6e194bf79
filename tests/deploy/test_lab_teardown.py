"""Tests that take the lab down or build their own: they run after test_lab.py.

The first one ends the session lab; the others bring up small labs of their own.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.lab import dockerd, procs
from deploy.lab.config import ClusterConfig
from deploy.lab.lab import Lab, LabError

pytestmark = pytest.mark.lab

FAKE = Path(__file__).resolve().parent / "fake_enroll.py"
Leftovers = Callable[[Lab], list[str]]


def test_down_leaves_nothing(lab: Lab, lab_leftovers: Leftovers) -> None:
    # give down something to undo: a container and a swarm
    client = lab.docker("PiLike-02")
    client.containers.run("busybox:latest", ["sleep", "600"], detach=True)
    if client.info()["Swarm"]["LocalNodeState"] != "active":
        client.swarm.init(advertise_addr="198.18.0.12")
    started = time.monotonic()
    lab.down()
    assert time.monotonic() - started < 30
    assert lab_leftovers(lab) == []
    lab.down()  # idempotent
    assert lab_leftovers(lab) == []
    cli = [str(Path(sys.executable).parent / "enroll-lab"), "--state-dir", str(lab.state_dir)]
    out = subprocess.run([*cli, "down"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "lab is down"
    out = subprocess.run([*cli, "status"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "no lab is up"


@pytest.mark.parametrize("state_file", ["kept", "lost"])
def test_down_after_a_crash(
    state_file: str, make_cluster: Callable[..., ClusterConfig], lab_leftovers: Leftovers
) -> None:
    first = Lab()
    try:
        first.up(make_cluster(("PiLike-01", "PiLike-02")), controller=False, agents=False)
        first.docker("PiLike-01").containers.run("busybox:latest", ["sleep", "600"],
                                                 detach=True)
        first.popen("PiLike-02", ["sleep", "600"])  # a stray process in a Pi's netns
        # the crash: every daemon killed with SIGKILL, nothing cleaned up
        for node in first.status()["nodes"]:
            os.kill(node["pid"], signal.SIGKILL)
        if state_file == "lost":
            first.state_file.unlink()
        assert lab_leftovers(first)  # there is something to clean
        Lab().down()  # a fresh object, as `enroll-lab down` after the crash would be
        assert lab_leftovers(first) == []
    finally:
        first.down()


def test_kill_pi_then_down(
    make_cluster: Callable[..., ClusterConfig], lab_leftovers: Leftovers
) -> None:
    the_lab = Lab()
    try:
        the_lab.up(make_cluster(("PiLike-01", "PiLike-02")), controller=False, agents=False)
        the_lab.kill_pi("PiLike-02")
        nodes = {n["name"]: n for n in the_lab.status()["nodes"]}
        assert nodes["PiLike-01"]["running"] and not nodes["PiLike-02"]["running"]
        the_lab.down()
        assert lab_leftovers(the_lab) == []
    finally:
        the_lab.down()


def test_controller_and_agents_follow_the_contract(
    make_cluster: Callable[..., ClusterConfig], lab_leftovers: Leftovers
) -> None:
    """With fake enroll-controller/enroll-agent: init, serve, /healthz, token, agent.toml."""
    the_lab = Lab()
    the_lab.controller_cmd = [sys.executable, str(FAKE), "controller"]
    the_lab.agent_cmd = [sys.executable, str(FAKE), "agent"]
    config = make_cluster(("PiLike-01", "PiLike-02", "PiLike-03"), controller="PiLike-01")
    try:
        st = the_lab.up(config)
        assert st["controller_url"] == "https://198.18.0.11:8443"
        assert st["pin"].startswith("sha256:") and st["admin_token"]
        ctl_client = the_lab.docker("PiLike-01")
        assert ctl_client.info()["Swarm"]["LocalNodeState"] == "active"  # init ran there
        for node in st["nodes"]:
            assert node["agent_running"], node
            pi = config.pi(node["name"])
            path = the_lab.pi_dir(pi.name) / "agent.toml"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            conf = tomllib.loads(path.read_text())
            assert conf == {
                "state_dir": str(the_lab.pi_dir(pi.name) / "agent"),
                "ca_pin": st["pin"],
                "docker_host": node["docker_host"],
                "hardware_id": pi.hardware_id,
                "advertise_addr": str(pi.ip),
                "model": pi.model,
                "arch": pi.arch,
                "controller_dir": str(the_lab.pi_dir(pi.name) / "controller"),
                "controller_unit": "",
                "controller_command": the_lab.controller_command(pi.name),
                "controller_log": str(the_lab.pi_dir(pi.name) / "controller.log"),
                # the controller's own Pi needs no token (its controller makes the lab's)
                **({"bootstrap_token": "fake-bootstrap-token"}
                   if pi.token and pi.name != "PiLike-01" else {}),
            }
        assert not config.pi("PiLike-03").token  # the cluster file said token = false
        # the first manager's agent started its controller; the workers' agents did not
        assert the_lab.controller_pid("PiLike-01") is not None
        assert the_lab.controller_pid("PiLike-02") is None
        # the agent ran inside its Pi (hostname from the UTS namespace)
        node = next(n for n in st["nodes"] if n["name"] == "PiLike-02")
        agent_pid = node["agent_pid"]
        for ns in ("net", "uts"):
            a, d = os.stat(f"/proc/{agent_pid}/ns/{ns}"), os.stat(f"/proc/{node['pid']}/ns/{ns}")
            assert (a.st_dev, a.st_ino) == (d.st_dev, d.st_ino)
        state = json.loads(the_lab.state_file.read_text())
        assert stat.S_IMODE(the_lab.state_file.stat().st_mode) == 0o600
        assert state["phase"] == "up"
        the_lab.down()
        assert lab_leftovers(the_lab) == []
        assert not procs.alive(agent_pid)
    finally:
        the_lab.down()


def test_failed_up_is_torn_down(
    make_cluster: Callable[..., ClusterConfig], lab_leftovers: Leftovers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    the_lab = Lab()
    monkeypatch.setattr(dockerd, "DOCKERD", "/bin/false")  # every daemon dies at once
    with pytest.raises(LabError, match=r"dockerd for PiLike-0[12] exited"):
        the_lab.up(make_cluster(("PiLike-01", "PiLike-02")), controller=False, agents=False)
    assert lab_leftovers(the_lab) == []
