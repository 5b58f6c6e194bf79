"""The agent must not need Flask (design: the wire format is shared, the agent stays small)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_agent_does_not_import_flask() -> None:
    code = ("import sys; import agent.cli, agent.enroll, agent.wire.jws, agent.wire.mdns; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'werkzeug', 'controller')); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_flask_check_can_fail() -> None:
    # The same check notices Flask when it is imported, so the test above can fail.
    code = "import sys, controller.app; assert 'flask' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "AssertionError" in result.stderr


def test_the_check_in_does_not_import_zeroconf() -> None:
    # `enroll-agent check` runs every few minutes on a Pi Zero W: no mDNS library at all
    code = ("import sys; import agent.cli, agent.checkin, agent.enroll, agent.discovery, "
            "agent.supervise; assert 'zeroconf' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
