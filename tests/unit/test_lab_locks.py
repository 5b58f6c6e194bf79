"""The lab's host-wide file lock (deploy/lab/locks.py): one operation at a time, and a
bounded wait says who is in the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.lab.locks import locked


class Busy(Exception):
    pass


def test_a_held_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    held = locked(lock)
    with held, pytest.raises(Busy), locked(lock, 0.1, lambda: Busy(f"{lock} is held")):
        pass
    with locked(lock, 0.1, lambda: Busy("free again")):  # released with the block
        pass
