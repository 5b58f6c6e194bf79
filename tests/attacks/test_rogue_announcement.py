"""A rogue mDNS announcement cannot stop the agent on a manager (issue 10, section 5), nor
`enrollctl` finding the controllers.

Anyone on the LAN can announce `_swarm-enroll._tcp` with the real CA pin (it is public)
and a made-up `cluster=`. The agent used to take the cluster id from it and stop with
"foreign swarm". Here the real agent code, its real client and the real TLS server: the
agent learns the cluster id from the controller after the pin check, and enrolls.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import agent.enroll as enroll
import controller.enrollctl as enrollctl
from agent.config import AgentConfig
from agent.discovery import ControllerFinder
from agent.enroll import Agent
from agent.wire.messages import SwarmState

from .conftest import LiveController


def test_made_up_cluster_in_an_announcement_does_not_stop_a_manager(
        live_controller: LiveController, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pin = live_controller.state.ca.pin
    real = live_controller.state.swarm.local().cluster_id
    # This Pi's own Docker: a manager of the controller's swarm (the controller's own Pi).
    local = SwarmState(node_id="m" * 25, state="active", manager=True, cluster_id=real)
    monkeypatch.setattr(enroll, "connect", lambda host: object())
    monkeypatch.setattr(enroll, "docker_version", lambda docker: "27.3.1")
    monkeypatch.setattr(enroll, "local_state", lambda docker: local)
    finder = ControllerFinder(pin)
    finder.found("rogue._swarm-enroll._tcp.local.",
                 {"v": "1", "ca": pin, "cluster": "deadbeefdead"}, ["127.0.0.9"], 9)
    agent = Agent(AgentConfig(state_dir=tmp_path / "agent", hostname="mgr-2",
                              hardware_id="00000000feed", arch="armv7l", model="Pi 4",
                              ca_pin=pin), finder)

    agent._step(live_controller.url)  # raised Refused("... manages another swarm ...")

    assert agent.progress.status == "pending"
    records = [r for d in live_controller.state.state.hosts() for r in d.records]
    assert [(n.hostname, n.state) for n in records] == [("mgr-2", "pending")]


def test_enrollctl_passes_over_rogue_announcements_to_a_controller_with_our_ca(
        start_controller: Callable[..., LiveController], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Announced first with the real pin: a server of another CA, and an address where
    nobody listens. `enrollctl --pin` tries each controller found with the pin check,
    uses the first that passes, and says which one answered (with the CA fetched, and
    again with it cached)."""
    real, rogue = start_controller(), start_controller()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{closed.getsockname()[1]}"
    pin = real.state.ca.pin
    monkeypatch.setattr(enrollctl, "discover", lambda pin: [rogue.url, dead, real.url])
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "ENROLLCTL_URL": "", "ENROLLCTL_CA_FILE": ""}
    for _ in ("fetched", "cached"):
        result = CliRunner().invoke(enrollctl.main, ["--pin", pin, "--json", "health"],
                                    env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ca"] == pin
        said = result.stderr.splitlines()
        assert said[0].startswith(f"(passed over {rogue.url}: pin_mismatch")
        assert said[1].startswith(f"(passed over {dead}: unreachable")
        assert said[2:] == [f"(answered by {real.url})"]
