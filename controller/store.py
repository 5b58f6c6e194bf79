"""The controller's state: one SQLite file in WAL mode behind a small interface.

Every change is one transaction together with its audit row, so a controller
killed at any point leaves either the whole change or none of it. The schema
version lives in `PRAGMA user_version`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    hardware_id TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    state TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'new',
    role TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    availability TEXT NOT NULL DEFAULT 'active',
    approve TEXT NOT NULL DEFAULT 'manual',
    reason TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '[]',
    docker_version TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    swarm_node_id TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX nodes_hostname ON nodes (hostname COLLATE NOCASE);
CREATE INDEX nodes_thumbprint ON nodes (thumbprint);
CREATE INDEX nodes_hardware ON nodes (hardware_id);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    hostname_glob TEXT NOT NULL DEFAULT '',
    uses_total INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    created_by TEXT NOT NULL
);
CREATE TABLE admins (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    node_id TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_node ON audit (node_id);
CREATE TABLE sightings (
    hostname TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    hardware_id TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    addresses TEXT NOT NULL DEFAULT '[]',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (hostname, agent_id)
);
"""

_JSON_FIELDS = {"labels", "addresses"}


@dataclass
class Node:
    """One enrollment record: a Pi (hostname + hardware + key) and where it stands."""

    id: str
    hostname: str
    hardware_id: str
    thumbprint: str
    public_jwk: str
    # pending | approved | joined | rejected | revoked, and the archived ones that are
    # history only: replaced | forgotten | pruned
    state: str
    role: str
    kind: str = "new"  # new | replacement
    labels: dict[str, str] = field(default_factory=dict)
    availability: str = "active"
    approve: str = "manual"
    reason: str = ""
    arch: str = ""
    model: str = ""
    addresses: list[str] = field(default_factory=list)
    docker_version: str = ""
    agent_version: str = ""
    swarm_node_id: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    last_seen: float = 0.0

    def public(self) -> dict[str, Any]:
        """The record as the admin API shows it (no key material beyond the public id)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.pop("public_jwk")
        data["agent_id"] = data.pop("thumbprint")
        return data


@dataclass
class Token:
    id: str
    hash: str
    description: str
    hostname_glob: str
    uses_total: int
    uses_left: int
    created_at: float
    expires_at: float
    revoked_at: float | None
    created_by: str

    def public(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.pop("hash")
        return data


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def _row_to_node(row: sqlite3.Row) -> Node:
    data = dict(row)
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key])
    return Node(**data)


def _make_private(path: Path) -> None:
    """The database and its -wal and -shm files 0600: SQLite gives those the database's mode."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


class Store:
    """SQLite-backed state. One connection, serialised by a lock: writes are tiny."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        _make_private(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        with self.tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema {version}, newer than this controller "
                    f"({SCHEMA_VERSION}); upgrade swarm-enroll"
                )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; rolled back whole on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- audit ---------------------------------------------------------------

    @staticmethod
    def _audit(db: sqlite3.Connection, actor: str, action: str, node: Node | None,
               reason: str = "", detail: dict[str, Any] | None = None) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, node_id, hostname, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, node.id if node else "", node.hostname if node else "",
             reason, json.dumps(detail or {}, sort_keys=True)),
        )

    def audit(self, actor: str, action: str, node: Node | None = None, reason: str = "",
              detail: dict[str, Any] | None = None) -> None:
        with self.tx() as db:
            self._audit(db, actor, action, node, reason, detail)

    def list_audit(self, node_id: str = "", hostname: str = "", action: str = "",
                   actor: str = "", since: float = 0.0, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit WHERE at >= ?"
        args: list[Any] = [since]
        for column, value in (("node_id", node_id), ("action", action), ("actor", actor)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        if hostname:
            sql += " AND hostname = ? COLLATE NOCASE"
            args.append(hostname)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    # -- nodes ---------------------------------------------------------------

    def create_node(self, node: Node, actor: str, action: str, reason: str = "") -> Node:
        now = time.time()
        node.created_at = node.updated_at = node.last_seen = now
        data = {f.name: getattr(node, f.name) for f in fields(node)}
        for key in _JSON_FIELDS:
            data[key] = json.dumps(data[key], sort_keys=True)
        columns = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self.tx() as db:
            db.execute(f"INSERT INTO nodes ({columns}) VALUES ({marks})", list(data.values()))
            self._audit(db, actor, action, node, reason)
        return node

    def update_node(self, node_id: str, actor: str, action: str, why: str = "",
                    **changes: Any) -> Node:
        """Change a record and log `why`, in one transaction (`reason` is a column)."""
        with self.tx() as db:
            node = self._get(db, node_id)
            if node is None:
                raise KeyError(node_id)
            changes["updated_at"] = time.time()
            self._set(db, node_id, changes)
            for key, value in changes.items():
                setattr(node, key, value)
            detail = {k: v for k, v in changes.items() if k not in ("updated_at", "last_seen")}
            self._audit(db, actor, action, node, why, detail)
        return node

    def touch_node(self, node_id: str, **changes: Any) -> None:
        """Refresh what the agent reports (last seen, addresses): not worth an audit row."""
        changes["last_seen"] = time.time()
        with self.tx() as db:
            self._set(db, node_id, changes)

    @staticmethod
    def _set(db: sqlite3.Connection, node_id: str, changes: dict[str, Any]) -> None:
        values = [json.dumps(v, sort_keys=True) if k in _JSON_FIELDS else v
                  for k, v in changes.items()]
        assignments = ", ".join(f"{k} = ?" for k in changes)
        db.execute(f"UPDATE nodes SET {assignments} WHERE id = ?", [*values, node_id])

    @staticmethod
    def _get(db: sqlite3.Connection, node_id: str) -> Node | None:
        row = db.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
        return _row_to_node(row) if row else None

    def get_node(self, node_id: str) -> Node | None:
        with self._lock:
            return self._get(self._db, node_id)

    def nodes_by_hostname(self, hostname: str) -> list[Node]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM nodes WHERE hostname = ? COLLATE NOCASE ORDER BY created_at",
                (hostname,),
            ).fetchall()
        return [_row_to_node(r) for r in rows]

    def list_nodes(self) -> list[Node]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM nodes ORDER BY hostname, created_at").fetchall()
        return [_row_to_node(r) for r in rows]

    # -- bootstrap tokens ----------------------------------------------------

    def create_token(self, token: Token) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.hash, token.description, token.hostname_glob, token.uses_total,
                 token.uses_left, token.created_at, token.expires_at, token.revoked_at,
                 token.created_by),
            )
            self._audit(db, token.created_by, "token.create", None, token.description,
                        {"token_id": token.id, "uses": token.uses_total,
                         "expires_at": token.expires_at, "hostname_glob": token.hostname_glob})

    def list_tokens(self) -> list[Token]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tokens ORDER BY created_at").fetchall()
        return [Token(**dict(r)) for r in rows]

    def token_by_hash(self, digest: str) -> Token | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tokens WHERE hash = ?", (digest,)).fetchone()
        return Token(**dict(row)) if row else None

    def revoke_token(self, token_id: str, actor: str) -> Token | None:
        with self.tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            if cur.rowcount:
                self._audit(db, actor, "token.revoke", None, "", {"token_id": token_id})
            row = db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return Token(**dict(row)) if row else None

    def approve(self, node_id: str, actor: str, why: str, token_id: str = "",
                archive: tuple[str, ...] = (), **changes: Any) -> Node | None:
        """Approve a node in one transaction: spend a token use (if `token_id`; None when
        it is spent or expired), apply `changes`, and mark the `archive`d records (the
        ones a replacement takes over from) as replaced."""
        now = time.time()
        with self.tx() as db:
            if token_id:
                cur = db.execute(
                    "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0"
                    " AND revoked_at IS NULL AND expires_at > ?", (token_id, now))
                if not cur.rowcount:
                    return None
            node = self._get(db, node_id)
            if node is None:
                raise KeyError(node_id)
            changes.update(state="approved", reason="", updated_at=now)
            self._set(db, node_id, changes)
            for key, value in changes.items():
                setattr(node, key, value)
            detail = {k: v for k, v in changes.items() if k != "updated_at"}
            if token_id:
                detail["token_id"] = token_id
            self._audit(db, actor, "node.approve", node, why, detail)
            for old_id in archive:
                old = self._get(db, old_id)
                if old is None:
                    continue
                self._set(db, old_id, {"state": "replaced", "updated_at": now,
                                       "reason": f"replaced by {node_id}"})
                self._audit(db, actor, "node.replaced", old, f"replaced by {node_id}",
                            {"replaced_by": node_id})
        return node

    def revoked_matching(self, thumbprint: str, hardware_id: str) -> Node | None:
        """A revoked record of this key or this hardware: such a Pi is refused until forgotten."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM nodes WHERE state = 'revoked' AND (thumbprint = ? OR"
                " hardware_id = ?) ORDER BY updated_at DESC LIMIT 1", (thumbprint, hardware_id),
            ).fetchone()
        return _row_to_node(row) if row else None

    # -- admins --------------------------------------------------------------

    def add_admin(self, name: str, digest: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO admins VALUES (?, ?, ?)",
                       (name, digest, time.time()))
            self._audit(db, "controller", "admin.create", None, "", {"name": name})

    def admin_by_hash(self, digest: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT name FROM admins WHERE hash = ?", (digest,)).fetchone()
        return row["name"] if row else None

    # -- mDNS sightings ------------------------------------------------------

    def record_sighting(self, hostname: str, agent_id: str, hardware_id: str, state: str,
                        role: str, arch: str, addresses: list[str]) -> None:
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO sightings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (hostname, agent_id) DO UPDATE SET"
                " hardware_id = excluded.hardware_id, state = excluded.state,"
                " role = excluded.role, arch = excluded.arch,"
                " addresses = excluded.addresses, last_seen = excluded.last_seen",
                (hostname, agent_id, hardware_id, state, role, arch,
                 json.dumps(addresses), now, now),
            )

    def list_sightings(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM sightings ORDER BY hostname").fetchall()
        return [{**dict(r), "addresses": json.loads(r["addresses"])} for r in rows]
