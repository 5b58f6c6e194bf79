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
