"""The SQLite backend: compare-and-swap on one row, 0600 files, the first schema converted."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from controller.state import Conflict, HostDoc, State
from controller.state.sqlite import SCHEMA_VERSION, SQLiteBackend

from ...helpers import make_record


@pytest.fixture
def backend(tmp_path: Path):
    b = SQLiteBackend(tmp_path / "state.db")
    yield b
    b.close()


def test_schema_and_wal(backend: SQLiteBackend) -> None:
    with sqlite3.connect(backend.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_files_are_private(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "state.db")
    backend.create("host/pi-1", {"hostname": "pi-1"})  # the -wal and -shm files exist now
    try:
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(f"{backend.path}{suffix}").st_mode)
            assert mode == 0o600, (suffix, oct(mode))
    finally:
        backend.close()


def test_existing_files_are_made_private(tmp_path: Path) -> None:
    SQLiteBackend(tmp_path / "state.db").close()
    os.chmod(tmp_path / "state.db", 0o644)
    SQLiteBackend(tmp_path / "state.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "state.db").st_mode) == 0o600


def test_compare_and_swap(backend: SQLiteBackend) -> None:
    first = backend.create("k", {"n": 1})
    with pytest.raises(Conflict):
        backend.create("k", {"n": 9})
    second = backend.update(first, {"n": 2})
    assert second.version == first.version + 1
    with pytest.raises(Conflict):  # a writer that read version 1 loses
        backend.update(first, {"n": 3})
    with pytest.raises(Conflict):
        backend.delete(first)
    assert backend.get("k").body == {"n": 2}
    backend.delete(second)
    assert backend.get("k") is None
    with pytest.raises(Conflict):
        backend.update(second, {"n": 4})


def test_reopen_keeps_documents(tmp_path: Path) -> None:
    b = SQLiteBackend(tmp_path / "state.db")
    b.create("host/pi-1", {"hostname": "pi-1"})
    b.close()
    b = SQLiteBackend(tmp_path / "state.db")
    try:
        assert [s.key for s in b.load_all()] == ["host/pi-1"]
    finally:
        b.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    SQLiteBackend(tmp_path / "state.db").close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="upgrade"):
        SQLiteBackend(tmp_path / "state.db")


V1_SCHEMA = """
CREATE TABLE nodes (id TEXT PRIMARY KEY, hostname TEXT NOT NULL, hardware_id TEXT NOT NULL,
  thumbprint TEXT NOT NULL, public_jwk TEXT NOT NULL, state TEXT NOT NULL,
  kind TEXT NOT NULL DEFAULT 'new', role TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}',
  availability TEXT NOT NULL DEFAULT 'active', approve TEXT NOT NULL DEFAULT 'manual',
  reason TEXT NOT NULL DEFAULT '', arch TEXT NOT NULL DEFAULT '', model TEXT NOT NULL
  DEFAULT '', addresses TEXT NOT NULL DEFAULT '[]', docker_version TEXT NOT NULL DEFAULT '',
  agent_version TEXT NOT NULL DEFAULT '', swarm_node_id TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL, updated_at REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, description TEXT NOT
  NULL DEFAULT '', hostname_glob TEXT NOT NULL DEFAULT '', uses_total INTEGER NOT NULL,
  uses_left INTEGER NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
  revoked_at REAL, created_by TEXT NOT NULL);
CREATE TABLE admins (name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, created_at REAL
  NOT NULL);
CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT
  NULL, action TEXT NOT NULL, node_id TEXT NOT NULL DEFAULT '', hostname TEXT NOT NULL
  DEFAULT '', reason TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}');
CREATE TABLE sightings (hostname TEXT NOT NULL, agent_id TEXT NOT NULL);
"""


def first_schema_db(path: Path) -> dict[str, object]:
    """A state.db as the first controller wrote it: two Pis, a token, an admin, audit."""
    record = make_record("PiLike-03", state="joined", labels={"zone": "a"},
                         addresses=["198.18.0.13"], created_at=10.0, updated_at=20.0,
                         last_seen=30.0)
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        row = record.to_json()
        row.pop("source")
        row["labels"], row["addresses"] = json.dumps(row["labels"]), json.dumps(
            row["addresses"])
        db.execute(f"INSERT INTO nodes ({', '.join(row)}) VALUES "
                   f"({', '.join('?' for _ in row)})", list(row.values()))
        db.execute("INSERT INTO tokens VALUES ('tok_1', ?, 'rack', 'PiLike-*', 6, 5, 1.0, "
                   "4e9, NULL, 'admin:admin')", ("h" * 64,))
        db.execute("INSERT INTO admins VALUES ('admin', ?, 1.0)", ("a" * 64,))
        for at, actor, action, node, host, detail in [
            (1.0, "controller", "admin.create", "", "", {"name": "admin"}),
            (2.0, "admin:admin", "token.create", "", "", {"token_id": "tok_1"}),
            (10.0, "agent:x", "node.request", record.id, "PiLike-03", {}),
            (11.0, "token:tok_1", "node.approve", record.id, "PiLike-03",
             {"token_id": "tok_1"}),
            (12.0, "controller", "baseline.created", "", "", {}),
        ]:
            db.execute("INSERT INTO audit (at, actor, action, node_id, hostname, reason, "
                       "detail) VALUES (?, ?, ?, ?, ?, '', ?)",
                       (at, actor, action, node, host, json.dumps(detail)))
        db.execute("PRAGMA user_version = 1")
    return {"record": record}


def test_first_schema_is_converted_in_place(tmp_path: Path) -> None:
    made = first_schema_db(tmp_path / "state.db")
    state = State(SQLiteBackend(tmp_path / "state.db"))
    try:
        record = made["record"]
        doc: HostDoc = state.host("pilike-03")
        (got,) = doc.records
        assert got.to_json() == {**record.to_json(), "source": ""}  # type: ignore[union-attr]
        assert [e.action for e in doc.events] == ["node.request", "node.approve"]
        (token,) = state.tokens()
        assert (token.id, token.uses_left, token.hostname_glob) == ("tok_1", 5, "PiLike-*")
        assert [e.action for e in token.events] == ["token.create"]
        assert state.admin_by_hash("a" * 64) == "admin"
        assert [e.action for e in state.events()] == [
            "baseline.created", "node.approve", "node.request", "token.create",
            "admin.create"]
        with sqlite3.connect(tmp_path / "state.db") as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "nodes" not in tables and "audit" not in tables and "docs" in tables
    finally:
        state.close()
