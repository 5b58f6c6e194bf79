"""The first schema's state.db (tables nodes, tokens, admins, audit) as documents.

Used twice: when a SQLite store of the first schema is opened (converted in place), and
when a controller imports a single-controller state dir into the swarm's shared store.
Every audit row lands in the document it is about (its hostname's, its token's), or in
an audit document of its own; each document keeps its newest rows (model.trim).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from controller.state.model import (
    EVENTS_KEPT,
    LOOSE_EVENTS_KEPT,
    Event,
    HostDoc,
    Record,
    Token,
    admin_key,
    audit_key,
    host_key,
    token_key,
)


def documents_from_v1(db: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
    """(key, body) of every document the first schema's tables hold (rows as sqlite3.Row)."""
    hosts: dict[str, HostDoc] = {}
    for row in db.execute("SELECT * FROM nodes ORDER BY created_at"):
        data = dict(row)
        for key in ("labels", "addresses"):
            data[key] = json.loads(data[key])
        record = Record.from_json(data)
        doc = hosts.setdefault(record.hostname.lower(), HostDoc(record.hostname))
        doc.records.append(record)
    tokens = {row["id"]: Token.from_json(dict(row)) for row in db.execute("SELECT * FROM tokens")}
    loose: list[Event] = []
    for row in db.execute("SELECT * FROM audit ORDER BY seq"):
        event = Event(row["at"], row["actor"], row["action"], row["node_id"], row["hostname"],
                      row["reason"], json.loads(row["detail"] or "{}"))
        token_id = event.detail.get("token_id", "")
        if event.hostname and event.hostname.lower() in hosts:
            hosts[event.hostname.lower()].events.append(event)
        elif event.action.startswith("token.") and token_id in tokens:
            tokens[token_id].events.append(event)
        else:
            loose.append(event)
    docs: list[tuple[str, dict[str, Any]]] = []
    for doc in hosts.values():
        doc.trim()
        docs.append((host_key(doc.hostname), doc.to_json()))
    for token in tokens.values():
        del token.events[:-EVENTS_KEPT]
        docs.append((token_key(token.id), token.to_json()))
    for row in db.execute("SELECT * FROM admins"):
        docs.append((admin_key(row["name"]), {"name": row["name"], "hash": row["hash"],
                                              "created_at": row["created_at"]}))
    for event in loose[-LOOSE_EVENTS_KEPT:]:
        docs.append((audit_key(event), {"event": event.to_json()}))
    return docs
