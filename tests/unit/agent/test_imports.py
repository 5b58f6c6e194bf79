"""What the agent imports: never Flask (the wire format is shared, the agent stays small),
and, on the path a joined agent runs, none of the heavy libraries enrollment needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def _loaded_of(setup: str, packages: tuple[str, ...]) -> str:
    """Python that runs `setup`, then fails if any of `packages` was imported."""
    return (f"import sys; {setup}; "
            f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r}); "
            "assert not bad, bad")


def test_agent_does_not_import_flask() -> None:
    result = _run(_loaded_of("import agent.cli, agent.enroll, agent.wire.jws, agent.wire.mdns",
                             ("flask", "werkzeug", "controller")))
    assert result.returncode == 0, result.stderr


def test_flask_check_can_fail() -> None:
    # The same check notices Flask when it is imported, so the test above can fail.
    result = _run(_loaded_of("import controller.app", ("flask",)))
    assert result.returncode != 0 and "AssertionError" in result.stderr


def test_a_joined_agent_needs_neither_cryptography_nor_joserfc_nor_click(tmp_path: Path) -> None:
    # what the resident agent runs once joined: key, signed request, controller client
    setup = ("import pathlib, agent.daemon, agent.checkin, agent.discovery, agent.enroll, "
             "agent.mdns, agent.responder, agent.supervise, agent.swarm, agent.wire.mdns; "
             "from agent.wire.keys import load_or_create_agent_key; "
             "from agent.wire.signing import sign_request; "
             f"key = load_or_create_agent_key(pathlib.Path({str(tmp_path / 'k.pem')!r})); "
             "sign_request(key, {}, 'n', '/v1/x')")
    result = _run(_loaded_of(setup, ("cryptography", "joserfc", "requests", "docker", "click")))
    assert result.returncode == 0, result.stderr


def test_the_check_in_does_not_import_zeroconf() -> None:
    # `enroll-agent check` runs every few minutes on a Pi Zero W: no mDNS library at all
    code = ("import sys; import agent.cli, agent.checkin, agent.enroll, agent.discovery, "
            "agent.supervise; assert 'zeroconf' not in sys.modules")
    result = _run(code)
    assert result.returncode == 0, result.stderr
