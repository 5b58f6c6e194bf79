"""At boot the agent starts beside Docker: its request waits for Docker's own answer.

A stand-in Docker on a real unix socket refuses /info while it "starts"; the controller is
a recorder. The agent fetches its nonce meanwhile, and its request carries the swarm
state Docker gave, never one it made up; a Docker that never answers gets no request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agent.enroll as enroll
from agent.config import AgentConfig
from agent.discovery import ControllerFinder
from agent.enroll import Agent
from agent.swarm import DockerError

from .scripted import unix_http

PIN = "sha256:" + "ab" * 32
INFO = {"Swarm": {"NodeID": "", "LocalNodeState": "inactive", "ControlAvailable": False}}


class Recorder:
    """The controller as the agent's client: what was asked, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def prefetch_nonce(self) -> None:
        self.calls.append(("nonce", None))

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("enroll", request))
        return {"status": "pending", "id": "enr_1", "role": "worker"}

    def close(self) -> None:
        pass


def _agent(tmp_path: Path, sock: Path, controller: Recorder,
           monkeypatch: pytest.MonkeyPatch) -> Agent:
    config = AgentConfig(state_dir=tmp_path / "agent", hostname="pi-1",
                         hardware_id="00000000cafe", arch="armv7l", model="Pi 3",
                         docker_host=f"unix://{sock}", ca_pin=PIN)
    agent = Agent(config, ControllerFinder(PIN))
    monkeypatch.setattr(agent, "_client", lambda url: controller)
    return agent


def test_the_request_waits_for_a_starting_docker_and_carries_its_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def starting(method: str, path: str, headers: dict, body: bytes) -> Any:
        asked.append(path)
        if path == "/info" and asked.count("/info") <= 3:
            return 500, {}, b'{"message": "starting"}'
        answer = INFO if path == "/info" else {"Version": "24.0.7"}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    controller = Recorder()
    with unix_http(tmp_path / "d.sock", starting):
        agent = _agent(tmp_path, tmp_path / "d.sock", controller, monkeypatch)
        agent._step("https://10.0.0.1:8443")
    assert asked.count("/info") == 4
    assert [c[0] for c in controller.calls] == ["nonce", "enroll"]
    request = controller.calls[1][1]
    assert request["swarm"]["state"] == "inactive" and request["docker_version"] == "24.0.7"


def test_a_docker_that_never_answers_gets_no_request_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enroll, "DOCKER_START_WAIT", 0.3)
    controller = Recorder()
    agent = _agent(tmp_path, tmp_path / "absent.sock", controller, monkeypatch)
    with pytest.raises(DockerError):
        agent._step("https://10.0.0.1:8443")
    assert [c[0] for c in controller.calls] == ["nonce"]


class JoinedController(Recorder):
    """A controller for which this Pi has joined already (its swarm: c...)."""

    def cluster(self) -> str:
        return "c" * 12

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("enroll", request))
        return {"status": "joined", "id": "enr_1", "role": "worker"}


@pytest.mark.parametrize("may", [True, False])
def test_a_joined_agent_ends_its_run_to_restart_lean_only_when_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, may: bool) -> None:
    active = {"Swarm": {"NodeID": "n" * 25, "LocalNodeState": "active",
                        "ControlAvailable": False, "Cluster": {"ID": "c" * 25}}}

    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        answer = active if path == "/info" else {"Version": "24.0.7"}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    controller = JoinedController()
    with unix_http(tmp_path / "d.sock", docker):
        agent = _agent(tmp_path, tmp_path / "d.sock", controller, monkeypatch)
        agent.finder.static_url = "https://10.0.0.1:8443"
        agent.may_restart = lambda: may
        # an agent that carries on is stopped at its first idle wait
        monkeypatch.setattr(agent.stop, "wait", lambda timeout=None: agent.stop.set())
        agent.run()
    assert agent.progress.status == "joined"
    assert agent.restart is may
