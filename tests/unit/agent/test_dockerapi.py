"""The agent's Docker client on a real unix socket (the controller's keeps connections:
tests/unit/controller/test_dockerapi.py)."""

from __future__ import annotations

import json
from pathlib import Path

from agent.dockerapi import Docker

from .scripted import unix_http


def test_the_agent_makes_a_connection_per_call(tmp_path: Path) -> None:
    """The agent makes a few calls and keeps nothing open between them."""
    with unix_http(tmp_path / "d.sock", lambda *_: (200, {}, json.dumps({}).encode())) as seen:
        docker = Docker(f"unix://{tmp_path / 'd.sock'}")
        docker.get("/info")
        docker.get("/info")
    assert seen.connections == 2
