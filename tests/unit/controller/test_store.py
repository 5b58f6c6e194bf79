"""The SQLite store: WAL, schema version, one transaction per change with its audit row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import controller.store as store_module
from controller.store import SCHEMA_VERSION, Store, Token

from ..helpers import FakeClock, make_node


class Boom(Exception):
    pass


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def _count(store: Store, table: str) -> int:
    # A separate connection: what is really committed in the file.
    with sqlite3.connect(store.path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_user_version_is_schema_version(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1


def test_journal_mode_is_wal(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopen_keeps_data(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    node = s.create_node(make_node(), "test", "node.request")
    s.close()
    s = Store(tmp_path / "state.db")
    try:
        assert s.get_node(node.id) == node
    finally:
        s.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="upgrade"):
        Store(tmp_path / "state.db")


def test_exception_inside_tx_writes_nothing(store: Store) -> None:
    nodes, audits = _count(store, "nodes"), _count(store, "audit")
    node = make_node()
    with pytest.raises(Boom), store.tx() as db:
        db.execute("INSERT INTO nodes (id, hostname, hardware_id, thumbprint, public_jwk, state,"
                   " role, created_at, updated_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?,"
                   " 0, 0, 0)", (node.id, node.hostname, node.hardware_id, node.thumbprint,
                                 "{}", "pending", "worker"))
        store._audit(db, "test", "node.request", node)
        # Inside the transaction both rows exist...
        assert db.execute("SELECT count(*) FROM nodes").fetchone()[0] == nodes + 1
        raise Boom
    # ...and after the exception neither does.
    assert (_count(store, "nodes"), _count(store, "audit")) == (nodes, audits)
    assert store.get_node(node.id) is None
    assert store.list_audit(node_id=node.id) == []


def test_store_usable_after_rollback(store: Store) -> None:
    with pytest.raises(Boom), store.tx():
        raise Boom
    node = store.create_node(make_node(), "test", "node.request")
    assert store.get_node(node.id) is not None


def test_failed_update_leaves_record_and_audit_untouched(store: Store) -> None:
    node = store.create_node(make_node(), "test", "node.request")
    audits = _count(store, "audit")
    with pytest.raises(sqlite3.OperationalError):
        store.update_node(node.id, "admin:x", "node.approve", state="approved", no_such_column=1)
    assert store.get_node(node.id).state == "pending"
    assert _count(store, "audit") == audits


def test_failed_create_leaves_no_audit_row(store: Store) -> None:
    node = store.create_node(make_node(), "test", "node.request")
    audits = _count(store, "audit")
    with pytest.raises(sqlite3.IntegrityError):
        store.create_node(make_node(id=node.id), "test", "node.request")
    assert _count(store, "audit") == audits


def test_token_use_rolled_back_when_approval_fails(store: Store) -> None:
    token = Token("tok_1", "h" * 64, "", "", 1, 1, 0.0, 4e9, None, "admin:x")
    store.create_token(token)
    with pytest.raises(KeyError):
        store.approve("enr_missing", "token:tok_1", "why", token_id="tok_1")
    assert store.list_tokens()[0].uses_left == 1


def test_create_node_writes_one_audit_row(store: Store) -> None:
    node = store.create_node(make_node(), "agent:abc", "node.request", "rule 'pi-*'")
    rows = store.list_audit(node_id=node.id)
    assert [(r["actor"], r["action"], r["reason"], r["hostname"]) for r in rows] == [
        ("agent:abc", "node.request", "rule 'pi-*'", "pi-1")]


def test_update_node_audits_the_change(store: Store) -> None:
    node = store.create_node(make_node(), "agent:abc", "node.request")
    updated = store.update_node(node.id, "admin:alice", "node.approve", "looks fine",
                                state="approved", labels={"zone": "a"})
    assert updated.state == "approved"
    assert store.get_node(node.id).labels == {"zone": "a"}
    last = store.list_audit(node_id=node.id)[0]
    assert (last["actor"], last["action"], last["reason"]) == ("admin:alice", "node.approve",
                                                               "looks fine")
    assert last["detail"] == {"state": "approved", "labels": {"zone": "a"}}


def test_update_node_can_set_the_reason_column(store: Store) -> None:
    # The record has a `reason` column (why it was rejected) and the audit row has its own
    # reason: approve/reject set both (controller/enrollment.py approve() and reject()).
    node = store.create_node(make_node(), "agent:abc", "node.request")
    updated = store.update_node(node.id, "admin:alice", "node.reject", "duplicate Pi",
                                state="rejected", reason="rejected by admin:alice")
    assert updated.reason == "rejected by admin:alice"
    assert store.list_audit(node_id=node.id)[0]["reason"] == "duplicate Pi"


def test_update_missing_node_raises_keyerror(store: Store) -> None:
    with pytest.raises(KeyError):
        store.update_node("enr_nope", "admin:x", "node.approve", state="approved")


def test_touch_node_is_not_audited(store: Store) -> None:
    node = store.create_node(make_node(), "agent:abc", "node.request")
    audits = _count(store, "audit")
    store.touch_node(node.id, addresses=["10.0.0.5"])
    assert store.get_node(node.id).addresses == ["10.0.0.5"]
    assert _count(store, "audit") == audits


def test_nodes_by_hostname_case_insensitive(store: Store) -> None:
    node = store.create_node(make_node("PiLike-03"), "t", "node.request")
    store.create_node(make_node("other"), "t", "node.request")
    assert [n.id for n in store.nodes_by_hostname("pilike-03")] == [node.id]


def test_public_views_hide_key_material() -> None:
    public = make_node(public_jwk='{"x": "secret-ish"}').public()
    assert "public_jwk" not in public and "thumbprint" not in public and "agent_id" in public
    token = Token("tok_1", "h" * 64, "", "", 1, 1, 0.0, 1.0, None, "admin:x")
    assert "hash" not in token.public()


def test_audit_filters(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1000.0)
    monkeypatch.setattr(store_module, "time", clock)
    a = store.create_node(make_node("Pi-A"), "agent:a", "node.request")
    clock.advance(10)
    b = store.create_node(make_node("pi-b"), "agent:b", "node.request")
    clock.advance(10)
    store.update_node(a.id, "admin:alice", "node.approve", state="approved")
    clock.advance(10)
    store.update_node(b.id, "admin:bob", "node.reject", state="rejected")

    def actions(**filters) -> list[tuple[str, str]]:
        return [(r["hostname"], r["action"]) for r in store.list_audit(**filters)]

    assert actions(node_id=a.id) == [("Pi-A", "node.approve"), ("Pi-A", "node.request")]
    assert actions(hostname="PI-A") == [("Pi-A", "node.approve"), ("Pi-A", "node.request")]
    assert actions(action="node.reject") == [("pi-b", "node.reject")]
    assert actions(actor="admin:alice") == [("Pi-A", "node.approve")]
    assert actions(since=1015.0) == [("pi-b", "node.reject"), ("Pi-A", "node.approve")]
    assert actions(action="node.request", limit=1) == [("pi-b", "node.request")]
    assert actions(actor="admin:alice", action="node.reject") == []
    # Newest first.
    seqs = [r["seq"] for r in store.list_audit()]
    assert seqs == sorted(seqs, reverse=True)


def test_sightings_upsert(store: Store) -> None:
    store.record_sighting("pi-1", "id1", "hw1", "new", "", "armv6l", ["10.0.0.9"])
    store.record_sighting("pi-1", "id1", "hw1", "pending", "worker", "armv6l", ["10.0.0.10"])
    rows = store.list_sightings()
    assert len(rows) == 1
    assert (rows[0]["state"], rows[0]["addresses"]) == ("pending", ["10.0.0.10"])
