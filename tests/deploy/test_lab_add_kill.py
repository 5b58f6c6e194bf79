"""Changing a running lab: add_pi (a freshly flashed Pi), kill_pi (pull the plug), the
replaced Pi (same name again), restart_agent, and the `add`/`kill` verbs of enroll-lab.

The tests run in order on the session lab (PiLike-01..03 at .11-.13, no controller),
adding PiNew-* Pis to it; the last one takes the lab down and checks nothing is left, and
the module's finalizer brings the session lab back for the test modules after this one.
Agents are the stand-in of fake_enroll.py (no controller needed: the pin is given).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import docker.errors
import pytest

from deploy.lab import mounts, netns, procs
from deploy.lab.config import ClusterConfig, PiSpec
from deploy.lab.demo import wait_for
from deploy.lab.lab import Lab, LabError

pytestmark = pytest.mark.lab

FAKE = Path(__file__).resolve().parent / "fake_enroll.py"
PIN = "sha256:" + "ab" * 32
SESSION_IPS = {"PiLike-01": "198.18.0.11", "PiLike-02": "198.18.0.12", "PiLike-03": "198.18.0.13"}
BUSYBOX = "/usr/bin/busybox"




@pytest.fixture(scope="module")
def lab2(
    request: pytest.FixtureRequest, lab: Lab, make_cluster: Callable[..., ClusterConfig]
) -> Lab:
    """The session lab, seen through a Lab whose agents are the fake stand-in."""
    the_lab = Lab(state_dir=lab.state_dir)
    the_lab.agent_cmd = [sys.executable, str(FAKE), "agent"]

    def restore() -> None:  # the last test here took the session lab down
        if not the_lab.state():
            lab.up(make_cluster(), controller=False, agents=False)

    request.addfinalizer(restore)
    return the_lab


def names(the_lab: Lab) -> list[str]:
    return [n["name"] for n in the_lab.status()["nodes"]]


def ping(the_lab: Lab, name: str, ip: str, wait: int = 3) -> bool:
    res = the_lab.exec(name, [BUSYBOX, "ping", "-c", "1", "-W", str(wait), ip],
                       capture_output=True, timeout=15)
    return res.returncode == 0


def traces_of(the_lab: Lab, name: str, index: int) -> list[str]:
    """What a running Pi has and an unplugged one must not: processes, netns, veth, mounts."""
    spec = the_lab.daemon_spec(name)
    found = [f"process {p}" for p in procs.with_arg_containing(f"{spec.run_dir}/")
             if procs.alive(p)]
    found += [f"process {p} in cgroup" for p in procs.in_cgroup(spec.cgroup_parent)
              if procs.alive(p)]
    if netns.netns_exists(spec.netns):
        found.append(f"netns {spec.netns}")
    if netns.link_exists(f"selv{index}", netns=the_lab.lan_ns):
        found.append(f"veth selv{index}")
    found += [f"mount {m}" for m in mounts.mounts_under(spec.run_dir, spec.data_root)]
    return found


def state_entry(the_lab: Lab, name: str) -> dict:
    return next(p for p in the_lab.state()["pis"] if p["name"] == name)


def test_add_pi_joins_the_lan(lab2: Lab) -> None:
    before = names(lab2)
    node = lab2.add_pi("PiNew-01", agent=False)
    assert node["name"] == "PiNew-01" and node["running"] and node["pid"]
    assert node["ip"] == "198.18.0.14"  # the next free address after the cluster file's
    assert node["netns"] == "selab-PiNew-01" and not node["added_as_manager"] and not node["dead"]
    assert len(node["hardware_id"]) == 16 and node["hardware_id"].startswith("00000000")
    assert names(lab2) == [*before, "PiNew-01"]
    entry = state_entry(lab2, "PiNew-01")
    assert entry["index"] == len(before) + 1 and entry["token"] is False

    client = lab2.docker("PiNew-01")
    assert client.info()["Name"] == "PiNew-01"  # its own UTS namespace
    tags = {t for img in client.images.list() for t in img.tags}
    assert set(lab2.state()["images"]) <= tags  # the stand-ins `up` imported, same names
    out = lab2.exec("PiNew-01", ["sh", "-c", "hostname; ip -4 -o addr show dev eth0"],
                    capture_output=True, check=True).stdout
    assert out.startswith("PiNew-01\n") and "198.18.0.14/24" in out
    assert ping(lab2, "PiNew-01", SESSION_IPS["PiLike-01"])  # a cluster-file Pi, same LAN

    second = lab2.add_pi("PiNew-02", agent=False, ip="198.18.0.40", manager=True,
                         hardware_id="00000000feedbe02", arch="aarch64")
    assert second["ip"] == "198.18.0.40" and second["added_as_manager"] and second["running"]
    assert second["hardware_id"] == "00000000feedbe02" and second["arch"] == "aarch64"
    assert second["model"].startswith("Raspberry Pi 4")

    # a swarm across the two added Pis
    mgr = lab2.docker("PiNew-01")
    mgr.api.init_swarm(advertise_addr="198.18.0.14", listen_addr="198.18.0.14:2377")

    def swarm_inspect():  # right after init the manager may answer 503 for a moment
        try:
            return mgr.api.inspect_swarm()
        except docker.errors.APIError:
            return None

    manager = wait_for("the new swarm's manager", swarm_inspect, 30, interval=0.2)
    token = manager["JoinTokens"]["Worker"]
    assert lab2.docker("PiNew-02").swarm.join(
        remote_addrs=["198.18.0.14:2377"], join_token=token,
        advertise_addr="198.18.0.40", listen_addr="198.18.0.40:2377")

    def both_ready():
        states = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"]
                  for n in mgr.nodes.list()}
        return states if states == {"PiNew-01": "ready", "PiNew-02": "ready"} else None

    wait_for("PiNew-01 and PiNew-02 Ready in one swarm", both_ready, 30, interval=0.2)


def test_add_pi_refuses_live_and_bad_names_and_addresses(lab2: Lab) -> None:
    before = lab2.state()["pis"]
    with pytest.raises(LabError, match=r"PiNew-01 is already in the lab and alive"):
        lab2.add_pi("pinew-01", agent=False)  # hostnames are case-insensitive
    with pytest.raises(LabError, match="already in the lab"):
        lab2.add_pi("PiLike-02", agent=False)  # a Pi of the cluster file
    with pytest.raises(LabError, match="not a valid hostname"):
        lab2.add_pi("bad_name", agent=False)
    with pytest.raises(LabError, match="reserved"):
        lab2.add_pi("lan", agent=False)
    with pytest.raises(LabError, match="already used by PiNew-02"):
        lab2.add_pi("PiNew-09", agent=False, ip="198.18.0.40")
    with pytest.raises(LabError, match="outside the lab subnet"):
        lab2.add_pi("PiNew-09", agent=False, ip="10.0.0.9")
    with pytest.raises(LabError, match="hardware_id"):
        lab2.add_pi("PiNew-09", agent=False, hardware_id="no spaces")
    # agents need the CA pin: this lab has no controller
    with pytest.raises(LabError, match="no controller"):
        lab2.add_pi("PiNew-09")
    with pytest.raises(LabError, match="bootstrap token"):
        lab2.add_pi("PiNew-09", token="lab", agent=False)
    assert lab2.state()["pis"] == before
    assert not netns.netns_exists("selab-PiNew-09")


def test_kill_pi_pulls_the_plug(lab2: Lab) -> None:
    client = lab2.docker("PiNew-02")
    container = client.containers.run("busybox:latest", ["sleep", "600"], detach=True)
    container.reload()
    container_pid = container.attrs["State"]["Pid"]
    node = lab2.node("PiNew-02")
    index = state_entry(lab2, "PiNew-02")["index"]
    assert procs.alive(node["pid"]) and procs.alive(container_pid)
    assert traces_of(lab2, "PiNew-02", index)  # there is something to unplug

    lab2.kill_pi("PiNew-02")
    assert not procs.alive(node["pid"]) and not procs.alive(container_pid)
    assert traces_of(lab2, "PiNew-02", index) == []
    after = lab2.node("PiNew-02")
    assert not after["running"] and after["dead"] and after["pid"] is None
    assert state_entry(lab2, "PiNew-02")["dead"] is True
    assert lab2.log_path("PiNew-02", "docker").stat().st_size > 0  # logs stay
    assert (lab2.pi_dir("PiNew-02") / "docker").is_dir()  # so does its disk
    with pytest.raises(LabError, match="not running"):
        lab2.exec("PiNew-02", ["true"])
    lab2.kill_pi("PiNew-02")  # again: nothing left to do, no error
    assert lab2.node("PiNew-01")["running"]  # its neighbour is untouched
    assert not ping(lab2, "PiNew-01", "198.18.0.40", wait=1)


def test_add_pi_replaces_a_killed_pi(lab2: Lab) -> None:
    old_entry = state_entry(lab2, "PiNew-02")
    old_log = lab2.log_path("PiNew-02", "docker").read_text()
    node = lab2.add_pi("PiNew-02", agent=False)
    assert node["running"] and not node["dead"] and node["pid"]
    assert names(lab2).count("PiNew-02") == 1
    assert node["ip"] == old_entry["ip"] == "198.18.0.40"  # its address was free again
    assert node["hardware_id"] != old_entry["hardware_id"]  # new hardware
    assert not node["added_as_manager"]
    client = lab2.docker("PiNew-02")
    info = client.info()
    assert info["Name"] == "PiNew-02"
    assert info["Swarm"]["LocalNodeState"] == "inactive"  # a blank SD card, not the old one
    assert client.containers.list(all=True) == []
    pi_dir = lab2.pi_dir("PiNew-02")
    assert (pi_dir / "dockerd.log.1").read_text() == old_log  # the old log, rotated
    assert (pi_dir / "dockerd.log").read_text() != old_log  # a new log started
    assert ping(lab2, "PiNew-02", "198.18.0.14")


def controller_keys(lab: Lab, name: str) -> dict[str, str | list[str]]:
    """What every lab agent is told about running a controller should its Pi be a manager."""
    return {"controller_dir": str(lab.pi_dir(name) / "controller"), "controller_unit": "",
            "controller_command": lab.controller_command(name),
            "controller_log": str(lab.pi_dir(name) / "controller.log")}


def test_agent_gets_a_new_key_dir_and_restarts_with_the_same_one(lab2: Lab) -> None:
    node = lab2.add_pi("PiNew-03", token="seb_test-token", hardware_id="00000000c0ffee03",
                       agent_settings={"ca_pin": PIN, "poll_max_seconds": 2.0, "mdns": False,
                                       "controller_url": "https://198.18.0.11:8443"})
    pi_dir = lab2.pi_dir("PiNew-03")
    conf_path = pi_dir / "agent.toml"
    assert stat.S_IMODE(conf_path.stat().st_mode) == 0o600
    assert tomllib.loads(conf_path.read_text()) == {
        "state_dir": str(pi_dir / "agent"),
        "ca_pin": PIN,
        "docker_host": node["docker_host"],
        "hardware_id": "00000000c0ffee03",
        "advertise_addr": node["ip"],
        "model": "Raspberry Pi 3 Model B Rev 1.2",
        "arch": "armv7l",
        "bootstrap_token": "seb_test-token",
        "poll_max_seconds": 2.0,
        "mdns": False,
        "controller_url": "https://198.18.0.11:8443",
        **controller_keys(lab2, "PiNew-03"),
    }
    first = node["agent_pid"]
    assert node["agent_running"] and state_entry(lab2, "PiNew-03")["procs"]["agent"] == first
    for ns in ("net", "uts"):  # the agent lives inside its Pi
        a, d = os.stat(f"/proc/{first}/ns/{ns}"), os.stat(f"/proc/{node['pid']}/ns/{ns}")
        assert (a.st_dev, a.st_ino) == (d.st_dev, d.st_ino)
    log = lab2.log_path("PiNew-03", "agent")
    wait_for("the agent's first log line", lambda: "fake agent:" in log.read_text(), 30,
             interval=0.2)
    # what the real agent keeps in its state dir (the fake one writes nothing)
    (pi_dir / "agent").mkdir(exist_ok=True)
    (pi_dir / "agent" / "key.pem").write_text("the agent key\n")

    second = lab2.restart_agent("PiNew-03")
    assert second != first and not procs.alive(first) and procs.alive(second)
    assert lab2.node("PiNew-03")["agent_pid"] == second
    assert state_entry(lab2, "PiNew-03")["procs"]["agent"] == second
    assert (pi_dir / "agent" / "key.pem").read_text() == "the agent key\n"  # same key
    assert str(conf_path) in procs.cmdline(second)
    wait_for("the restarted agent", lambda: log.read_text().count("fake agent:") == 2, 30,
             interval=0.2)

    # the replaced Pi: new hardware, new key, no token unless given
    lab2.kill_pi("PiNew-03")
    assert not procs.alive(second)
    with pytest.raises(LabError, match="unplugged"):
        lab2.restart_agent("PiNew-03")
    node = lab2.add_pi("PiNew-03", agent_settings={"ca_pin": PIN})
    assert node["agent_running"] and node["agent_pid"] not in (first, second)
    assert not (pi_dir / "agent").exists()  # a fresh state dir: the old key is gone
    conf = tomllib.loads(conf_path.read_text())
    assert "bootstrap_token" not in conf and conf["hardware_id"] != "00000000c0ffee03"
    assert conf["ca_pin"] == PIN and conf["state_dir"] == str(pi_dir / "agent")
    assert (pi_dir / "agent.log.1").read_text().count("fake agent:") == 2
    wait_for("the new agent", lambda: log.read_text().count("fake agent:") == 1, 30, interval=0.2)


def test_restart_agent_needs_an_agent(lab2: Lab) -> None:
    with pytest.raises(LabError, match="no agent config"):
        lab2.restart_agent("PiNew-01")  # added without its agent
    with pytest.raises(LabError, match="no Pi named"):
        lab2.restart_agent("NoSuchPi")


def test_write_agent_config_extras(tmp_path: Path) -> None:
    the_lab = Lab(state_dir=tmp_path / "lab" / "state")
    pi = PiSpec(name="PiX", model="Raspberry Pi Zero W Rev 1.1", arch="armv6l",
                hardware_id="00000000deadbeef", ip=IPv4Address("198.18.0.77"))
    the_lab.pi_dir("PiX").mkdir(parents=True)
    base = {
        "state_dir": str(the_lab.pi_dir("PiX") / "agent"),
        "docker_host": the_lab.daemon_spec("PiX").docker_host,
        "hardware_id": "00000000deadbeef",
        "advertise_addr": "198.18.0.77",
        "model": "Raspberry Pi Zero W Rev 1.1",
        "arch": "armv6l",
        **controller_keys(the_lab, "PiX"),
    }
    path = the_lab.write_agent_config(pi, PIN, None)
    assert tomllib.loads(path.read_text()) == {**base, "ca_pin": PIN}
    path.chmod(0o644)
    odd = 'quote " backslash \\ newline \n tab \t é \x7f'
    path = the_lab.write_agent_config(pi, PIN, "seb_tok", {
        "ca_pin": "sha256:" + "cd" * 32,  # overrides the lab's
        "poll_max_seconds": 2.0, "mdns": False, "log_level": "debug",
        "controller_url": "https://198.18.0.11:8443", "retries": 3, "names": ["a", "b"],
        "log_file": odd,
    })
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {
        **base, "ca_pin": "sha256:" + "cd" * 32, "bootstrap_token": "seb_tok",
        "poll_max_seconds": 2.0, "mdns": False, "log_level": "debug",
        "controller_url": "https://198.18.0.11:8443", "retries": 3, "names": ["a", "b"],
        "log_file": odd,
    }
    # None drops a key (an agent without a pin, without a token)
    path = the_lab.write_agent_config(pi, PIN, "seb_tok", {"ca_pin": None,
                                                          "bootstrap_token": None})
    assert tomllib.loads(path.read_text()) == base
    with pytest.raises(LabError, match="not a plain TOML key"):
        the_lab.write_agent_config(pi, PIN, None, {"a b": 1})
    with pytest.raises(LabError, match="poll_max_seconds"):
        the_lab.write_agent_config(pi, PIN, None, {"poll_max_seconds": float("nan")})
    with pytest.raises(LabError, match="dict values cannot be written"):
        the_lab.write_agent_config(pi, PIN, None, {"nested": {"a": 1}})


def test_cli_add_and_kill(lab2: Lab) -> None:
    cli = [str(Path(sys.executable).parent / "enroll-lab"), "--state-dir", str(lab2.state_dir)]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120)

    def node(name: str) -> dict:
        out = run("status", "--json")
        assert out.returncode == 0, out.stderr
        return next(n for n in json.loads(out.stdout)["nodes"] if n["name"] == name)

    out = run("add", "PiNew-04", "--no-agent", "--manager", "--hardware-id",
              "00000000c0ffee04")
    assert out.returncode == 0, out.stderr
    assert "PiNew-04" in out.stdout
    n = node("PiNew-04")
    assert n["running"] and n["added_as_manager"] and n["hardware_id"] == "00000000c0ffee04"
    out = run("exec", "PiNew-04", "--", "hostname")
    assert out.returncode == 0 and out.stdout.strip() == "PiNew-04"

    for args, words in [
        (("add", "PiNew-04", "--no-agent"), "already in the lab"),
        (("add", "PiNew-05"), "no controller"),  # its agent would need the CA pin
        (("add", "PiNew-05", "--no-agent", "--lab-token"), "bootstrap token"),
        (("add", "Bad_Name", "--no-agent"), "not a valid hostname"),
        (("kill", "NoSuchPi"), "NoSuchPi"),
    ]:
        out = run(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and words in out.stderr, (args, out.stderr)
        assert out.stderr.startswith("enroll-lab: error: ")
    out = run("add", "PiNew-05", "--token", "t", "--lab-token")
    assert out.returncode == 2 and "exclude each other" in out.stderr
    out = run("add", "PiNew-05", "--token", "notatoken")  # as enrollctl flash checks it
    assert out.returncode == 2 and "not one made by 'enrollctl tokens create'" in out.stderr

    out = run("kill", "PiNew-04")
    assert out.returncode == 0 and "PiNew-04 is unplugged" in out.stdout, out.stderr
    n = node("PiNew-04")
    assert not n["running"] and n["dead"]
    assert not netns.netns_exists("selab-PiNew-04")
    assert "unplugged" in run("status").stdout
    assert "PiNew-05" not in names(lab2)


def test_down_after_add_and_kill_leaves_nothing(
    lab2: Lab, lab_leftovers: Callable[[Lab], list[str]]
) -> None:
    st = {n["name"]: n for n in lab2.status()["nodes"]}
    assert st["PiNew-01"]["running"] and st["PiNew-03"]["agent_running"]
    assert st["PiNew-04"]["dead"]  # killed, never replaced
    agent = st["PiNew-03"]["agent_pid"]
    lab2.down()
    assert lab_leftovers(lab2) == []
    assert netns.list_netns("selab") == [] and not netns.link_exists("selab0")
    assert not procs.alive(agent)
    # this lab's daemons only: another lab (a benchmark's, say) may run beside it
    dockerds = [p for p in procs.pids()
                if procs.alive(p) and Path((procs.cmdline(p) or [""])[0]).name == "dockerd"
                and any(str(lab2.state_dir) in a for a in procs.cmdline(p))]
    assert dockerds == []
    assert (lab2.pi_dir("PiNew-02") / "dockerd.log.1").is_file()  # rotated logs stay too
    assert (lab2.pi_dir("PiNew-03") / "agent.log.1").is_file()
