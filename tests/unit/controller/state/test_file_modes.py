"""The database holds hashed secrets and every record: 0600 like the keys, -wal and -shm too."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.state import State
from controller.state.sqlite import SQLiteBackend


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable (0644)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(db: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.glob(db.name + "*")}


def _write(store: State) -> None:
    store.add_admin("alice", "0" * 64)  # a write: SQLite creates -wal and -shm


def test_new_database_and_its_wal_files_are_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "state.db"
    store = State(SQLiteBackend(db))
    _write(store)
    modes = _modes(db)
    store.close()
    assert set(modes) == {"state.db", "state.db-wal", "state.db-shm"}
    assert set(modes.values()) == {0o600}


def test_existing_readable_files_are_made_0600(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "state.db"
    store = State(SQLiteBackend(db))
    _write(store)
    for path in tmp_path.iterdir():
        path.chmod(0o644)  # as an older controller left them, still open
    second = State(SQLiteBackend(db))
    assert set(_modes(db).values()) == {0o600}
    second.close()
    store.close()
