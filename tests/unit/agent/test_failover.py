"""An agent learns every controller from the answers it gets over pinned TLS, keeps them
across restarts, and moves to the next when one stops answering."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.enroll as enroll
from agent.config import AgentConfig
from agent.discovery import ControllerFinder
from agent.enroll import Agent

PIN = "sha256:" + "ab" * 32
URLS = ["https://198.18.0.11:8443", "https://198.18.0.12:8443"]


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    monkeypatch.setattr(enroll, "connect", lambda host: object())
    config = AgentConfig(state_dir=tmp_path / "agent", hostname="pi-1",
                         hardware_id="00000000cafe", ca_pin=PIN, mdns=False)
    return Agent(config, ControllerFinder(PIN))


def test_learned_controllers_survive_a_restart(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    agent = make(tmp_path, monkeypatch)
    agent._learn_controllers(URLS)
    assert agent.finder.urls() == URLS
    again = make(tmp_path, monkeypatch)  # the Pi rebooted; mDNS has not answered yet
    assert again.finder.urls() == URLS
    again.finder.rotate()
    assert again.finder.urls()[0] == URLS[1]


@pytest.mark.parametrize("bad", ["https://x", ["http://198.18.0.11:8443"], [5],
                                 ["https://a"] * 17])
def test_a_list_that_is_no_list_of_controllers_is_ignored(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         bad: object) -> None:
    agent = make(tmp_path, monkeypatch)
    agent._learn_controllers(URLS)
    agent._learn_controllers(bad)
    assert agent.finder.urls() == URLS


def test_an_announced_address_that_never_answers_does_not_hold_a_new_pi(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First contact (no CA yet): anyone can announce our public pin with an address that
    does not answer; the agent moves on to the next controller."""
    agent = make(tmp_path, monkeypatch)
    txt = {"v": "1", "ca": PIN, "cluster": "x"}
    agent.finder.found("rogue", txt, ["127.0.0.1"], 9)  # nothing listens there
    agent.finder.found("real", txt, ["198.18.0.11"], 8443)
    tried: list[str] = []

    def step(url: str) -> float:
        tried.append(url)
        if len(tried) == 3:
            agent.stop.set()
        if url != "https://127.0.0.1:9":
            return 0.0  # the real one answered (the exchange itself is tested elsewhere)
        return real_step(url)

    real_step = agent._step
    monkeypatch.setattr(agent, "_step", step)
    monkeypatch.setattr(agent, "_backoff", lambda: 0.0)
    agent.run()
    assert tried[:2] == ["https://127.0.0.1:9", "https://198.18.0.11:8443"]
