"""The documents in one SQLite file (WAL): the single-controller store.

One table, `docs(key, version, body)`; a write is `UPDATE ... WHERE version = ?`, so a
stale write changes nothing and says so (Conflict). The file and its -wal and -shm
companions are created 0600: they hold admin and bootstrap token hashes.

A state.db of the first schema (tables nodes, tokens, admins, audit) is converted into
documents on open, in one transaction (`legacy.documents_from_v1`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.state.backend import Changed, Conflict, Stored, dump
from controller.state.legacy import documents_from_v1

SCHEMA_VERSION = 2
_SCHEMA = "CREATE TABLE docs (key TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL)"


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """Files SQLite creates meanwhile (the db, -wal, -shm) are 0600 from the start."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _chmod_private(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


class SQLiteBackend:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        with _private_files():
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        _chmod_private(self.path)

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}, newer than this "
                                   f"controller ({SCHEMA_VERSION}); upgrade swarm-enroll")
            if version == SCHEMA_VERSION:
                return
            db.execute(_SCHEMA)
            if version == 1:
                db.row_factory = sqlite3.Row
                docs = documents_from_v1(db)
                db.row_factory = None
                db.executemany("INSERT INTO docs VALUES (?, 1, ?)",
                               [(k, dump(b)) for k, b in docs])
                for table in ("nodes", "tokens", "admins", "audit", "sightings"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load_all(self) -> list[Stored]:
        with self._lock:
            rows = self._db.execute("SELECT key, version, body FROM docs").fetchall()
        return [Stored(k, v, b) for k, v, b in rows]

    def get(self, key: str) -> Stored | None:
        with self._lock:
            row = self._db.execute("SELECT version, body FROM docs WHERE key = ?",
                                   (key,)).fetchone()
        return Stored(key, row[0], row[1]) if row else None

    def create(self, key: str, body: dict[str, Any]) -> Stored:
        text = dump(body)
        try:
            with self._tx() as db:
                db.execute("INSERT INTO docs VALUES (?, 1, ?)", (key, text))
        except sqlite3.IntegrityError:
            raise Conflict(key) from None
        return Stored(key, 1, text)

    def update(self, old: Stored, body: dict[str, Any]) -> Stored:
        text = dump(body)
        with self._tx() as db:
            cur = db.execute("UPDATE docs SET version = version + 1, body = ? "
                             "WHERE key = ? AND version = ?", (text, old.key, old.version))
            if not cur.rowcount:
                raise Conflict(old.key)
        return Stored(old.key, old.version + 1, text)

    def delete(self, old: Stored) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM docs WHERE key = ? AND version = ?",
                             (old.key, old.version))
            if not cur.rowcount:
                raise Conflict(old.key)

    def watch(self, changed: Changed) -> None:
        """One controller owns the file: there is nobody else to hear from."""

    def close(self) -> None:
        self._db.close()
