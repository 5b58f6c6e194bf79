"""mDNS through the OS's avahi-daemon where it runs, python-zeroconf elsewhere (issue 13).

Real parts: avahi-daemon with a private D-Bus in PiLike-02 and PiLike-03 (deploy/lab/avahi.py),
none in PiLike-01; real `enroll-agent run` on PiLike-02 (avahi) and PiLike-01 (zeroconf);
the controller's discovery code (controller/discovery.py, via discovery_only.py) on
PiLike-03 through avahi. Checked with `avahi-browse -rtp` inside the lab Pis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.lab import procs
from deploy.lab.avahi import AVAHI_RUN, LabAvahi, lab_markers
from deploy.lab.config import ClusterConfig
from deploy.lab.demo import wait_for
from deploy.lab.lab import Lab, LabError, console_script

pytestmark = pytest.mark.lab

PIN = "sha256:" + "ab" * 32
IPS = {"PiLike-01": "198.18.0.11", "PiLike-02": "198.18.0.12", "PiLike-03": "198.18.0.13"}
HERE = Path(__file__).resolve().parent
TIMEOUT = 60


@pytest.fixture(scope="module")
def avahis(lab: Lab) -> Iterator[dict[str, LabAvahi]]:
    if not shutil.which("avahi-daemon") or not shutil.which("avahi-browse"):
        pytest.fail("avahi-daemon and avahi-utils are not installed (make deps)")
    made_run_dir = not AVAHI_RUN.exists()
    started: list[LabAvahi] = []
    try:
        for name in ("PiLike-02", "PiLike-03"):
            daemon = LabAvahi(name, lab.netns_name(name), lab.run_base / name / "avahi")
            started.append(daemon)
            daemon.start()
        yield {d.pi: d for d in started}
    finally:
        for daemon in reversed(started):  # the one that made the mountpoint goes last
            daemon.stop()
    assert not [m for m in lab_markers() if m.startswith(lab.prefix)]  # nothing left
    assert not made_run_dir or lab_markers() or not AVAHI_RUN.exists()  # nor the dir


def _agent_config(lab: Lab, tmp: Path, name: str, **extra: str) -> Path:
    lines = {"state_dir": str(tmp / "state"), "ca_pin": PIN, "hardware_id":
             f"00000000a1b2c3{int(name[-1]):02x}", "docker_host": lab.docker_host(name),
             "advertise_addr": IPS[name], "controller_unit": "", "poll_max_seconds": 2.0,
             **extra}
    conf = tmp / "agent.toml"
    conf.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in lines.items()))
    conf.chmod(0o600)
    return conf


@dataclass
class Agent:
    proc: subprocess.Popen  # nsenter execs the agent: this is its pid
    log: Path

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def agents(lab: Lab, avahis: dict[str, LabAvahi],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Agent]]:
    """PiLike-02's agent through its avahi, PiLike-01's through zeroconf."""
    started: dict[str, Agent] = {}
    pi2 = avahis["PiLike-02"]
    for name in ("PiLike-02", "PiLike-01"):
        tmp = tmp_path_factory.mktemp(name)
        if name == "PiLike-02":
            dirs, env = {"avahi_services_dir": str(pi2.services_dir),
                         "avahi_run_dir": str(pi2.run_dir)}, pi2.env
        else:  # auto, and no avahi-daemon answers in its run dir: zeroconf
            (tmp / "no-avahi").mkdir()
            dirs, env = {"avahi_services_dir": str(tmp / "no-avahi"),
                         "avahi_run_dir": str(tmp / "no-avahi")}, {}
        argv = [str(console_script("enroll-agent")), "run", "--config",
                str(_agent_config(lab, tmp, name, **dirs))]
        started[name] = Agent(lab.popen(name, argv, log=tmp / "agent.log", env=env),
                              tmp / "agent.log")
    yield started
    for agent in started.values():
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def controller(lab: Lab, avahis: dict[str, LabAvahi], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The controller's discovery on PiLike-03, through its avahi; (process, its output)."""
    pi3 = avahis["PiLike-03"]
    state = tmp_path_factory.mktemp("controller")
    (state / "controller.toml").write_text(
        f'advertise_addr = "{IPS["PiLike-03"]}"\nhostname = "PiLike-03"\n'
        f'avahi_services_dir = "{pi3.services_dir}"\navahi_run_dir = "{pi3.run_dir}"\n')
    out = state / "out.jsonl"
    proc = lab.popen("PiLike-03", [sys.executable, str(HERE / "discovery_only.py"),
                                   str(state), PIN], log=out,
                     env={**pi3.env, "PYTHONPATH": str(HERE.parents[1])})
    yield proc, out
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def _resolved(output: str, name: str) -> list[list[str]]:
    """The `=` lines of avahi-browse -rtp output for instance `name`, split."""
    return [line.split(";", 9) for line in output.splitlines()
            if line.startswith("=;") and line.split(";")[3] == name]


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_agent_announces_through_avahi(lab: Lab, avahis: dict[str, LabAvahi],
                                       agents: dict[str, Agent]) -> None:
    pi2 = avahis["PiLike-02"]
    wait_for("PiLike-02's service file", (pi2.services_dir / "swarm-node.service").exists,
             TIMEOUT, interval=0.3)
    # seen over the lab LAN by the other Pi's avahi, with the agent's TXT
    lines = wait_for("PiLike-02 in PiLike-03's avahi-browse",
                     lambda: _resolved(avahis["PiLike-03"].browse("_swarm-node._tcp"),
                                       "PiLike-02"), TIMEOUT)
    fields = lines[0]
    assert (fields[1], fields[7], fields[8]) == ("eth0", IPS["PiLike-02"], "2377")
    assert '"state=new"' in fields[9] and '"hw=00000000a1b2c302"' in fields[9]
    # through avahi: this agent never loaded zeroconf; the zeroconf one did
    assert "zeroconf" not in _maps(agents["PiLike-02"].proc.pid)
    assert "zeroconf" in _maps(agents["PiLike-01"].proc.pid)


def test_zeroconf_agent_is_seen_by_avahi(avahis: dict[str, LabAvahi],
                                         agents: dict[str, Agent]) -> None:
    lines = wait_for("PiLike-01 (zeroconf) in PiLike-03's avahi-browse",
                     lambda: _resolved(avahis["PiLike-03"].browse("_swarm-node._tcp"),
                                       "PiLike-01"), TIMEOUT)
    assert lines[0][7] == IPS["PiLike-01"] and '"state=new"' in lines[0][9]


def test_controller_announces_through_avahi_and_agents_find_it(
        avahis: dict[str, LabAvahi], agents: dict[str, Agent],
        controller: tuple[subprocess.Popen, Path]) -> None:
    _, out = controller
    wait_for("the controller's responder", lambda: '"AvahiMDNS"' in out.read_text(),
             TIMEOUT, interval=0.3)
    assert (avahis["PiLike-03"].services_dir / "swarm-enroll.service").exists()
    lines = wait_for("PiLike-03 in PiLike-02's avahi-browse _swarm-enroll._tcp",
                     lambda: _resolved(avahis["PiLike-02"].browse("_swarm-enroll._tcp"),
                                       "PiLike-03"), TIMEOUT)
    assert lines[0][7] == IPS["PiLike-03"] and f'"ca={PIN}"' in lines[0][9]
    found = f"found controller 'PiLike-03' at https://{IPS['PiLike-03']}:8443"
    for name in ("PiLike-02", "PiLike-01"):  # through avahi-browse, and through zeroconf
        wait_for(f"{name}'s agent finding PiLike-03", lambda n=name: agents[n].said(found),
                 TIMEOUT, interval=0.5)


def test_controller_hears_pis_through_avahi(agents: dict[str, Agent],
                                            controller: tuple[subprocess.Popen, Path]) -> None:
    _, out = controller

    def heard() -> set[str]:
        seen: set[str] = set()
        for line in out.read_text().splitlines():
            if line.startswith('{"sightings"'):
                seen = {s["hostname"] for s in json.loads(line)["sightings"]
                        if s["state"] == "new"}
        return seen >= {"PiLike-01", "PiLike-02"} and seen  # type: ignore[return-value]

    wait_for("the controller hearing PiLike-01 and PiLike-02", heard, TIMEOUT)


def test_stopped_controller_is_withdrawn_agent_stays_announced(
        lab: Lab, avahis: dict[str, LabAvahi], agents: dict[str, Agent],
        controller: tuple[subprocess.Popen, Path]) -> None:
    proc, out = controller
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert '"stopped": true' in out.read_text()
    assert not (avahis["PiLike-03"].services_dir / "swarm-enroll.service").exists()
    wait_for("PiLike-03 gone from PiLike-02's avahi-browse", lambda: not _resolved(
        avahis["PiLike-02"].browse("_swarm-enroll._tcp"), "PiLike-03"), TIMEOUT)
    # the agent exits; avahi goes on announcing its Pi: a fresh avahi (empty cache) on
    # PiLike-03 still hears it
    agent = agents["PiLike-02"]
    agent.proc.send_signal(signal.SIGTERM)
    agent.proc.wait(timeout=15)
    assert (avahis["PiLike-02"].services_dir / "swarm-node.service").exists()
    avahis["PiLike-03"].stop()
    avahis["PiLike-03"].start()
    wait_for("PiLike-02 (its agent stopped) in a fresh avahi-browse on PiLike-03",
             lambda: _resolved(avahis["PiLike-03"].browse("_swarm-node._tcp"), "PiLike-02"),
             TIMEOUT)


def test_lab_teardown_ends_lab_avahis(request: pytest.FixtureRequest, lab: Lab,
                                      avahis: dict[str, LabAvahi],
                                      make_cluster: Callable[..., ClusterConfig]) -> None:
    """What `make test` and `enroll-lab down` do after a crash: no avahi, bus or
    mountpoint of the lab's is left (last here: it takes the session lab down)."""
    pids = [p.pid for d in avahis.values() for p in (d.avahi_proc, d.bus_proc) if p]
    made = any(d.made_mountpoint for d in avahis.values())
    assert pids and all(procs.alive(p) for p in pids)
    request.addfinalizer(lambda: lab.up(make_cluster(), controller=False, agents=False))
    lab.down()
    assert not [p for p in pids if procs.alive(p)]
    assert not [m for m in lab_markers() if m.startswith(lab.prefix)]
    assert not made or lab_markers() or not AVAHI_RUN.exists()  # another lab's may bind


def test_lab_refuses_a_host_avahi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An avahi in the host's network namespace would announce the lab's Pis on the host's
    own interfaces; one in another namespace (a lab Pi's) is no harm."""
    from deploy.lab import lab as lab_module
    monkeypatch.setattr(lab_module.os_avahi, "running", lambda *_: True)
    monkeypatch.setattr(lab_module.os_avahi, "RUN_DIR", tmp_path)
    (tmp_path / "pid").write_text(f"{os.getpid()}\n")  # in our (the host's) namespace
    with pytest.raises(LabError, match="avahi-daemon runs on this host"):
        lab_module._require_root_and_tools()
    elsewhere = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        wait_for("the other namespace", lambda: procs.netns_of(elsewhere.pid) !=
                 procs.netns_of(os.getpid()), 10, interval=0.05)
        (tmp_path / "pid").write_text(f"{elsewhere.pid}\n")
        lab_module._require_root_and_tools()
    finally:
        elsewhere.kill()
        elsewhere.wait()
