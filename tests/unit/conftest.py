"""Fixtures for the unit tests: a CA, a controller app on a temp state dir, signing agents.

Everything runs in-process on temp files: a real SQLite database, a real CA made by
controller.pki, the real Flask app driven by its test client. Only Docker is replaced
(helpers.FakeSwarm); journeys against a real dockerd are the lab tests' job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import CA, DEFAULT_RULES, Controller, FakeSwarm, build_controller, make_ca


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    d = tmp_path / "ca"
    d.mkdir()
    return make_ca(d)


@pytest.fixture
def other_ca(tmp_path: Path) -> CA:
    d = tmp_path / "other-ca"
    d.mkdir()
    return make_ca(d)


@pytest.fixture
def make_controller(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    """Factory: a fresh controller (own state dir, rules, FakeSwarm) per call."""
    built: list[Controller] = []

    def make(rules: str = DEFAULT_RULES, swarm: FakeSwarm | None = None,
             **settings: Any) -> Controller:
        controller = build_controller(tmp_path / f"state{len(built)}", rules, swarm, settings)
        built.append(controller)
        return controller

    yield make
    for controller in built:
        controller.state.close()


@pytest.fixture
def controller(make_controller: Callable[..., Controller]) -> Controller:
    return make_controller()
