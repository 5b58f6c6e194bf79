"""`enroll-agent check`: one exchange through the resident loop's own code, failing over
through the controllers known, and the resident agent started whenever the Pi must enroll
again. Docker and the controllers are fakes here; the lab tests use real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agent.checkin as checkin
import agent.enroll as enroll
import agent.supervise as supervise
from agent.cli import main
from agent.client import Unreachable
from agent.config import AgentConfig
from agent.discovery import ControllerFinder
from agent.enroll import Agent
from agent.wire.errors import WireError
from agent.wire.messages import SwarmState

PIN = "sha256:" + "ab" * 32
A, B = "https://198.18.0.11:8443", "https://198.18.0.12:8443"
NODE = "n" * 25
WORKER = SwarmState(node_id=NODE, state="active", manager=False, cluster_id="c" * 25)
MANAGER = SwarmState(node_id=NODE, state="active", manager=True, cluster_id="c" * 25)
LEFT = SwarmState(node_id="", state="inactive", manager=False, cluster_id="")


class FakeController:
    """One controller: its answer to a poll (or the exception it raises), what it got."""

    def __init__(self, url: str, answer: dict[str, Any] | Exception) -> None:
        self.url = url
        self.answer = answer
        self.asked: list[str] = []

    def _reply(self, what: str) -> dict[str, Any]:
        self.asked.append(what)
        if isinstance(self.answer, Exception):
            raise self.answer
        return dict(self.answer)

    def poll(self, enrollment: str) -> dict[str, Any]:
        return self._reply(f"poll {enrollment}")

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._reply("enroll")

    def cluster(self) -> str:
        return "c" * 12

    def close(self) -> None:
        pass


class Pi:
    """A joined Pi's state dir and the fakes around it."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config = AgentConfig(state_dir=tmp_path / "agent", hostname="pi-1",
                                  hardware_id="00000000cafe", ca_pin=PIN, mdns=False,
                                  arch="armv6l", model="Pi Zero W")
        self.swarm: SwarmState | Exception = WORKER
        self.controllers: dict[str, FakeController] = {}
        self.left: list[bool] = []
        self.systemctl: list[str] = []
        self.save(status="joined", enrollment="enr_1", node_id=NODE, controllers=[A, B])
        monkeypatch.setattr(enroll, "connect", lambda host: object())
        monkeypatch.setattr(enroll, "docker_version", lambda docker: "20.10.24")
        monkeypatch.setattr(enroll, "local_state", self._local_state)
        monkeypatch.setattr(enroll, "leave", lambda docker: self.left.append(True))
        monkeypatch.setattr(Agent, "_client", lambda agent, url: self.controllers[url])
        monkeypatch.setattr(supervise, "systemctl",
                            lambda action, unit: self.systemctl.append(f"{action} {unit}"))

    def _local_state(self, docker: object) -> SwarmState:
        if isinstance(self.swarm, Exception):
            raise self.swarm
        return self.swarm

    def save(self, **progress: Any) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        (self.config.state_dir / "enrollment.json").write_text(json.dumps(progress))

    def progress(self) -> dict[str, Any]:
        return json.loads((self.config.state_dir / "enrollment.json").read_text())

    def answer(self, url: str, answer: dict[str, Any] | Exception) -> FakeController:
        self.controllers[url] = FakeController(url, answer)
        return self.controllers[url]


@pytest.fixture
def pi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pi:
    return Pi(tmp_path, monkeypatch)


JOINED = {"status": "joined", "id": "enr_1", "role": "worker", "controllers": [A, B]}


def test_joined_is_one_poll_and_exit_0(pi: Pi, caplog: pytest.LogCaptureFixture) -> None:
    a = pi.answer(A, JOINED)
    caplog.set_level("INFO")
    assert checkin.check(pi.config) == checkin.JOINED
    assert a.asked == ["poll enr_1"]  # a poll, not a full request
    assert pi.systemctl == [] and pi.left == []
    assert f"checked in with {A}: joined" in caplog.text


# removed by the manager already, Docker may still say active, pending or error
@pytest.mark.parametrize(("state", "leaves"), [("active", True), ("pending", True),
                                              ("error", True), ("inactive", False)])
def test_revoked_leaves_the_swarm_and_stays_out(pi: Pi, state: str, leaves: bool) -> None:
    pi.swarm = SwarmState(node_id=NODE if state == "active" else "", state=state,
                          manager=False, cluster_id="")
    a = pi.answer(A, {"status": "revoked", "id": "enr_1", "reason": "stolen"})
    assert checkin.check(pi.config) == checkin.REVOKED
    assert pi.left == ([True] if leaves else [])
    assert pi.progress()["status"] == "revoked" and pi.progress()["reason"] == "stolen"
    assert checkin.check(pi.config) == checkin.REVOKED  # not asking again
    assert len(a.asked) == 1 and pi.systemctl == []


def test_a_dead_controller_is_skipped_for_the_next(pi: Pi,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    a = pi.answer(A, Unreachable(f"{A}: ConnectTimeout"))
    b = pi.answer(B, JOINED)
    caplog.set_level("INFO")
    assert checkin.check(pi.config) == checkin.JOINED
    assert a.asked == ["poll enr_1"] and b.asked == ["poll enr_1"]
    assert f"checked in with {B}: joined" in caplog.text


def test_a_controller_of_another_ca_is_skipped_too(pi: Pi) -> None:
    pi.answer(A, WireError("pin_mismatch", "not our CA", 495))
    b = pi.answer(B, JOINED)
    assert checkin.check(pi.config) == checkin.JOINED
    assert b.asked == ["poll enr_1"]


def test_no_controller_answering_hands_over_to_the_resident_agent(pi: Pi) -> None:
    pi.answer(A, Unreachable("a"))
    pi.answer(B, Unreachable("b"))
    assert checkin.check(pi.config) == checkin.HANDED_OVER
    assert pi.systemctl == ["start enroll-agent.service"]  # it browses mDNS for others
    assert pi.progress()["status"] == "joined"


def test_a_lost_record_hands_over(pi: Pi) -> None:
    pi.answer(A, WireError("not_found", "no such enrollment", 404))
    assert checkin.check(pi.config) == checkin.HANDED_OVER
    assert pi.progress()["status"] == "new"  # as the resident loop saves it
    assert pi.systemctl == ["start enroll-agent.service"]


def test_a_pi_out_of_the_swarm_asks_again_and_hands_over(pi: Pi) -> None:
    pi.swarm = LEFT
    a = pi.answer(A, {"status": "pending", "id": "enr_1", "role": "worker"})
    assert checkin.check(pi.config) == checkin.HANDED_OVER
    assert a.asked == ["enroll"]  # the full request, as the loop sends it
    assert pi.progress()["status"] == "pending"
    assert pi.systemctl == ["start enroll-agent.service"]


@pytest.mark.parametrize("status", ["new", "pending", "approved"])
def test_a_pi_not_joined_is_the_resident_agents(pi: Pi, monkeypatch: pytest.MonkeyPatch,
                                                status: str) -> None:
    pi.save(status=status, enrollment="enr_1")
    monkeypatch.setattr(enroll, "connect", lambda host: pytest.fail("Docker asked"))
    assert checkin.check(pi.config) == checkin.HANDED_OVER
    assert pi.systemctl == ["start enroll-agent.service"]


def test_a_pi_in_another_swarm_hands_over(pi: Pi, caplog: pytest.LogCaptureFixture) -> None:
    pi.swarm = SwarmState(node_id="x" * 25, state="active", manager=False,
                          cluster_id="z" * 25)  # someone ran `docker swarm join` by hand
    a = pi.answer(A, JOINED)
    assert checkin.check(pi.config) == checkin.HANDED_OVER
    assert a.asked == [] and "docker swarm leave" in caplog.text
    assert pi.systemctl == ["start enroll-agent.service"]


def test_docker_not_answering_is_a_temporary_failure(pi: Pi) -> None:
    pi.swarm = enroll.DockerError("connection refused")  # what the loop takes as such
    pi.answer(A, JOINED)
    assert checkin.check(pi.config) == checkin.TEMPFAIL
    assert pi.systemctl == [] and pi.progress()["status"] == "joined"


def test_on_a_manager_the_controller_is_started(pi: Pi) -> None:
    pi.swarm = MANAGER
    pi.answer(A, {**JOINED, "role": "manager"})
    assert checkin.check(pi.config) == checkin.JOINED
    assert pi.systemctl == ["start enroll-controller.service"]


def test_the_resident_agent_holding_the_lock_means_nothing_to_do(pi: Pi) -> None:
    a = pi.answer(A, JOINED)
    lock = checkin.hold_lock(pi.config.state_dir, wait=True)
    try:
        assert checkin.check(pi.config) == checkin.JOINED
    finally:
        assert lock is not None
        lock.close()
    assert a.asked == []
    assert checkin.check(pi.config) == checkin.JOINED and a.asked == ["poll enr_1"]


def test_cli_exits_with_the_check_ins_status(pi: Pi, tmp_path: Path) -> None:
    pi.answer(A, {"status": "revoked", "id": "enr_1"})
    conf = tmp_path / "agent.toml"
    conf.write_text(f'state_dir = "{pi.config.state_dir}"\nca_pin = "{PIN}"\n'
                    'hostname = "pi-1"\nhardware_id = "00000000cafe"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(conf)])
    assert result.exit_code == checkin.REVOKED, result.output
    bad = CliRunner().invoke(main, ["check", "--config", str(tmp_path / "none.toml")])
    assert bad.exit_code == 1 and "not found" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(("avahi", "command", "expected"), [
    (True, (), True), (False, (), False),
    (True, ("enroll-controller", "serve"), False),  # the controller is our child: stay
])
def test_the_timer_takes_over_only_where_avahi_runs_and_systemd_keeps_the_controller(
        monkeypatch: pytest.MonkeyPatch, avahi: bool, command: tuple[str, ...],
        expected: bool) -> None:
    import agent.avahi

    monkeypatch.setattr(agent.avahi, "running", lambda run_dir: avahi)
    config = AgentConfig(ca_pin=PIN, controller_command=command)
    assert checkin.timer_takes_over(config) is expected
    forced = AgentConfig(ca_pin=PIN, controller_command=command, mdns_via="zeroconf")
    assert checkin.timer_takes_over(forced) is False  # our zeroconf must stay to announce


def test_a_check_in_announces_through_avahi_and_searches_it_when_none_known_answers(
        pi: Pi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agent.avahi
    from agent.avahi import AvahiMDNS

    services = tmp_path / "services"
    services.mkdir()
    pi.config = AgentConfig(**{**pi.config.__dict__, "avahi_services_dir": services,
                               "mdns": True})
    monkeypatch.setattr(agent.avahi, "running", lambda run_dir: True)
    c = "https://198.18.0.13:8443"
    seen: list[str] = []

    def browse_once(self: AvahiMDNS, service: str, found: Any) -> None:
        seen.append(service)
        found("ctl-3", {"v": "1", "ca": PIN, "cluster": "x"}, ["198.18.0.13"], 8443)

    monkeypatch.setattr(AvahiMDNS, "browse_once", browse_once)
    pi.answer(A, Unreachable("down"))
    pi.answer(B, Unreachable("down"))
    third = pi.answer(c, {"status": "revoked", "id": "enr_1"})
    assert checkin.check(pi.config) == checkin.REVOKED
    assert seen == ["_swarm-enroll._tcp.local."] and third.asked == ["poll enr_1"]
    text = (services / "swarm-node.service").read_text()
    assert "state=revoked" in text  # avahi now tells the LAN what the agent would


@pytest.mark.parametrize("until_joined", [True, False])
def test_run_returns_once_joined_only_when_told(pi: Pi, until_joined: bool) -> None:
    pi.answer(A, JOINED)
    agent = Agent(pi.config, ControllerFinder(PIN))
    polls = pi.controllers[A].asked
    stop_after = 3

    def counting(enrollment: str) -> dict[str, Any]:
        if len(polls) + 1 >= stop_after:
            agent.stop.set()
        return FakeController.poll(pi.controllers[A], enrollment)

    pi.controllers[A].poll = counting  # type: ignore[method-assign]
    agent.config = AgentConfig(**{**pi.config.__dict__, "idle_poll_seconds": 0.0})
    agent.run(until_joined=until_joined)
    # the first exchange of a run is the full request; a resident agent goes on polling
    assert polls == (["enroll"] if until_joined else ["enroll", "poll enr_1", "poll enr_1"])
