"""How a joined agent restarts itself lean: `python -m agent.daemon --config PATH`, which
loads no CLI (click) and says what is wrong in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import daemon

ROOT = Path(__file__).resolve().parents[3]


def test_the_restart_execs_the_daemon_alone_with_the_same_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    execs: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: execs.append((path, argv)))
    monkeypatch.delenv(daemon.RESTARTED, raising=False)
    daemon._restart_lean(tmp_path / "agent.toml")
    assert execs == [(sys.executable, [sys.executable, "-m", "agent.daemon", "--config",
                                       str(tmp_path / "agent.toml")])]
    assert os.environ[daemon.RESTARTED] == "1"  # once only: the new image will not again


def _daemon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.daemon", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_config_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = _daemon("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert "absent.toml" in result.stderr


def test_anything_but_one_config_is_a_usage_error() -> None:
    result = _daemon("run")
    assert result.returncode == 2 and "usage: python -m agent.daemon --config PATH" in \
        result.stderr
