"""The swarm the agent may act for is the one its pinned controller names, never mDNS's.

An announcement carrying the real pin (public) and a made-up `cluster=` used to make the
agent on a manager stop with "foreign swarm". Now the cluster id comes from the
controller over pinned TLS (/healthz), and a real mismatch is logged and asked about again
later: the agent never exits on it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import agent.enroll as enroll
from agent.config import AgentConfig
from agent.discovery import ControllerFinder
from agent.enroll import Agent, ForeignSwarm
from agent.wire.messages import SwarmState

PIN = "sha256:" + "ab" * 32
REAL = "k8x2m4p9q7w3abcdefghijklm"  # the controller's swarm (25 characters)
THEIRS = "zzzzzzzzzzzz0000000000000"
MANAGER = SwarmState(node_id="n" * 25, state="active", manager=True, cluster_id=REAL)
WORKER_ELSEWHERE = SwarmState(node_id="w" * 25, state="active", manager=False,
                              cluster_id=THEIRS)


class FakeController:
    """A controller reached over pinned TLS: what it says of its swarm, what it was asked."""

    def __init__(self, cluster: str) -> None:
        self.cluster_id = cluster
        self.requests: list[dict[str, Any]] = []

    def cluster(self) -> str:
        return self.cluster_id

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {"status": "pending", "id": "enr_1", "role": "manager"}

    def close(self) -> None:
        pass


@pytest.fixture
def make_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(swarms: list[SwarmState], controller: FakeController) -> Agent:
        monkeypatch.setattr(enroll, "connect", lambda host: object())
        monkeypatch.setattr(enroll, "docker_version", lambda docker: "27.3.1")
        states = iter(swarms)
        monkeypatch.setattr(enroll, "local_state", lambda docker: next(states))
        config = AgentConfig(state_dir=tmp_path / "agent", hostname="mgr-1",
                             hardware_id="00000000cafe", arch="armv7l", model="Pi 3",
                             controller_url="https://10.0.0.1:8443", ca_pin=PIN)
        finder = ControllerFinder(PIN)
        # anyone's announcement: the real (public) pin, a made-up cluster, tried first
        finder.found("evil._swarm-enroll._tcp.local.",
                     {"v": "1", "ca": PIN, "cluster": "deadbeefdead"}, ["10.0.0.66"], 8443)
        agent = Agent(config, finder)
        monkeypatch.setattr(agent, "_client", lambda url: controller)
        return agent
    return make


def test_made_up_cluster_in_mdns_does_not_stop_a_manager(make_agent) -> None:
    controller = FakeController(REAL[:12])
    agent = make_agent([MANAGER], controller)
    agent._step("https://10.0.0.1:8443")
    assert [r["hostname"] for r in controller.requests] == ["mgr-1"]
    assert agent.progress.status == "pending"


def test_a_real_mismatch_is_refused_by_the_pinned_controllers_word(make_agent) -> None:
    controller = FakeController(REAL[:12])
    agent = make_agent([WORKER_ELSEWHERE], controller)
    with pytest.raises(ForeignSwarm, match="docker swarm leave"):
        agent._step("https://10.0.0.1:8443")
    assert controller.requests == []


def test_manager_of_another_swarm_is_refused(make_agent) -> None:
    controller = FakeController(THEIRS[:12])
    agent = make_agent([MANAGER], controller)
    with pytest.raises(ForeignSwarm, match="manages another swarm"):
        agent._step("https://10.0.0.1:8443")


def test_foreign_swarm_is_logged_once_and_the_agent_carries_on(
        make_agent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    controller = FakeController(REAL[:12])
    left = SwarmState()  # after 'docker swarm leave'
    agent = make_agent([WORKER_ELSEWHERE, WORKER_ELSEWHERE, WORKER_ELSEWHERE, left], controller)
    monkeypatch.setattr(agent, "_backoff", lambda: 0.0)
    real_handle = agent._handle

    def handle_then_stop(*args: Any) -> float:
        agent.stop.set()  # the first real answer ends this test's run
        return real_handle(*args)

    monkeypatch.setattr(agent, "_handle", handle_then_stop)
    with caplog.at_level(logging.INFO, logger="agent.enroll"):
        agent.run()  # returns: ForeignSwarm is not fatal
    foreign = [r for r in caplog.records if "did not join" in r.getMessage()]
    assert [r.levelno for r in foreign] == [logging.ERROR]
    assert [r["hostname"] for r in controller.requests] == ["mgr-1"]
