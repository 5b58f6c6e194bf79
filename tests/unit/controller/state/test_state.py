"""The state in memory over a backend: changes retried on conflict, bounded documents,
token uses spent in groups, the audit log across documents."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import controller.state.state as state_module
from agent.wire.errors import WireError
from controller.state import HostDoc, Record, State, Stored, Token, Unchanged
from controller.state.backend import Conflict, StoreUnavailable, dump
from controller.state.model import ARCHIVED_KEPT, EVENTS_KEPT, HOST_DOC_MOST
from controller.state.sqlite import SQLiteBackend

from ...helpers import make_record


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def state(path: Path) -> Iterator[State]:
    s = State(SQLiteBackend(path))
    yield s
    s.close()


@pytest.fixture
def other(path: Path, state: State) -> Iterator[State]:
    """A second controller on the same documents, with its own memory of them."""
    s = State(SQLiteBackend(path))
    yield s
    s.close()


def claim(record: Record) -> Any:
    def change(doc: HostDoc) -> Record:
        if doc.active():
            raise Unchanged(doc.active()[0])
        return doc.add(record, "agent:x", "node.request")
    return change


def test_a_change_is_written_with_its_audit_event(state: State) -> None:
    record = state.update_host("Pi-1", claim(make_record("Pi-1")))
    doc = state.host("pi-1")
    assert [r.id for r in doc.records] == [record.id]
    assert [(e.action, e.node_id, e.hostname) for e in doc.events] == [
        ("node.request", record.id, "Pi-1")]
    assert state.record(record.id).hostname == "Pi-1"


def test_memory_keeps_each_document_as_its_text_and_hands_out_copies(state: State) -> None:
    """A document in memory is its JSON text (a fraction of the parsed objects' memory);
    what a reader gets is a copy, so changing it changes nothing stored."""
    record = state.update_host("Pi-1", claim(make_record("Pi-1")))
    stored = state._stored("host/pi-1")
    assert isinstance(stored, Stored) and isinstance(stored.text, str)
    assert stored.body == stored.body and stored.body is not stored.body
    state.doc("host/pi-1")["records"].clear()
    state.host("pi-1").records.clear()
    assert state.record(record.id).id == record.id
    assert stored.text == state.backend.get("host/pi-1").text


def test_a_stale_writer_decides_again_on_what_the_other_wrote(state: State,
                                                              other: State) -> None:
    """Two controllers, two Pis, one name: exactly one record wins."""
    first = state.update_host("pi-1", claim(make_record("pi-1")))
    assert other.host("pi-1").records == []  # its memory has not heard of it yet
    calls: list[int] = []

    def counting(doc: HostDoc) -> Record:
        calls.append(len(doc.records))
        return claim(make_record("pi-1"))(doc)

    second = other.update_host("pi-1", counting)
    assert calls == [0, 1]  # decided on stale memory, refused, decided again on fresh
    assert second.id == first.id
    assert [r.id for r in other.host("pi-1").records] == [first.id]


def test_racing_threads_on_two_controllers_make_one_record(state: State, other: State) -> None:
    winners: list[str] = []
    start = threading.Barrier(8)

    def race(s: State) -> None:
        start.wait()
        winners.append(s.update_host("pi-9", claim(make_record("pi-9"))).id)

    threads = [threading.Thread(target=race, args=(s,)) for s in [state, other] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(winners)) == 1
    state.refresh("host/pi-9")
    assert len(state.host("pi-9").records) == 1


def test_unchanged_writes_nothing(state: State) -> None:
    state.update_host("pi-1", claim(make_record("pi-1")))
    before = state.backend.get("host/pi-1")
    state.update_host("pi-1", claim(make_record("pi-1")))
    assert state.backend.get("host/pi-1") == before


def test_an_error_inside_a_change_writes_nothing(state: State) -> None:
    def boom(doc: HostDoc) -> None:
        doc.add(make_record("pi-1"), "agent:x", "node.request")
        raise WireError("too_many_requests", "no room", 429)

    with pytest.raises(WireError):
        state.update_host("pi-1", boom)
    assert state.backend.get("host/pi-1") is None and state.host("pi-1").records == []


def test_a_document_that_keeps_changing_gives_up_with_503(state: State,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    state.update_host("pi-1", claim(make_record("pi-1")))
    real = state.backend.update

    def meddling(old: Stored, body: dict[str, Any]) -> Stored:
        real(state.backend.get(old.key), {**old.body, "meddled": True})  # someone else
        return real(old, body)

    monkeypatch.setattr(state.backend, "update", meddling)
    with pytest.raises(WireError) as err:
        state.update_host("pi-1", lambda doc: doc.log("admin:a", "node.note"))
    assert (err.value.code, err.value.status) == ("state_busy", 503)


def test_repeated_events_are_counted_not_written_again(state: State) -> None:
    record = state.update_host("pi-1", claim(make_record("pi-1")))
    for _ in range(5):
        state.update_host("pi-1", lambda doc: doc.log("agent:x", "token.refused",
                                                      doc.get(record.id), "bad token"))
    refused = state.events(action="token.refused")
    assert len(refused) == 1 and refused[0].count == 5
    assert refused[0].last_at >= refused[0].at


def test_documents_are_bounded(state: State) -> None:
    def many(doc: HostDoc) -> None:
        for i in range(EVENTS_KEPT + 30):
            doc.log("admin:a", "node.note", why=str(i))
        for _ in range(ARCHIVED_KEPT + 5):
            doc.records.append(make_record("pi-1", state="replaced"))
        doc.records.append(make_record("pi-1", state="joined"))

    state.update_host("pi-1", many)
    doc = state.host("pi-1")
    assert len(doc.events) == EVENTS_KEPT and doc.events[-1].reason == str(EVENTS_KEPT + 29)
    assert [r.state for r in doc.records].count("replaced") == ARCHIVED_KEPT
    assert doc.records[-1].state == "joined"  # never an open claim


def test_decisions_outlast_requests_and_refusals_when_trimmed(state: State) -> None:
    """Strangers asking for the name cannot push the real Pi's history out."""
    pi = make_record("tok-1")

    def history(doc: HostDoc) -> None:
        doc.add(pi, "agent:pi", "node.request")
        doc.change(pi, "token:t", "node.approve", state="approved")
        doc.change(pi, "agent:pi", "node.joined", state="joined")
        stranger = doc.add(make_record("tok-1", thumbprint="t"), "agent:t", "node.request")
        for i in range(EVENTS_KEPT * 2):  # (its claims are bounded elsewhere)
            doc.log(f"agent:t{i}", "node.request", stranger)
            doc.log(f"agent:t{i}", "token.refused", stranger, "bad token")
        doc.change(pi, "admin:a", "node.revoke", state="revoked")

    state.update_host("tok-1", history)
    events = state.host("tok-1").events
    assert len(events) == EVENTS_KEPT
    assert [e.action for e in events if e.node_id == pi.id] == [
        "node.approve", "node.joined", "node.revoke"]
    assert events[-2].action == "token.refused"  # the newest of the rest are kept


def test_revoked_and_pending_indexes(state: State) -> None:
    a = make_record("pi-1", state="revoked", hardware_id="hw-a")
    b = make_record("pi-2", source="10.0.0.7")
    c = make_record("pi-3", source="10.0.0.7")
    for r in (a, b, c):
        state.update_host(r.hostname, lambda doc, r=r: doc.records.append(r))
    assert state.revoked_matching(a.thumbprint, "other").id == a.id
    assert state.revoked_matching("other", "hw-a").id == a.id
    assert state.revoked_matching(b.thumbprint, b.hardware_id) is None
    assert state.pending_counts("10.0.0.7") == (2, 2)
    assert state.pending_counts("10.0.0.8") == (2, 0)
    state.update_host("pi-2", lambda doc: doc.change(doc.get(b.id), "admin:a", "node.approve",
                                                     state="approved"))
    assert state.pending_counts("10.0.0.7") == (1, 1)


def token(uses: int) -> Token:
    return Token("tok_1", "h" * 64, "", "", uses, uses, 0.0, 4e9, None, "admin:a")


def stored_uses(state: State) -> int:
    """Uses left as written in the store (without any controller's reserve)."""
    return state.backend.get("token/tok_1").body["uses_left"]


def revoke(t: Token) -> None:
    t.revoked_at = 1.0


def test_token_uses_are_never_overspent_on_two_controllers(state: State,
                                                           other: State) -> None:
    state.create_token(token(25), "admin:a")
    other.refresh("token/tok_1")
    granted: list[bool] = []
    start = threading.Barrier(40)

    def spend(s: State) -> None:
        start.wait()
        granted.append(s.spend_token("tok_1"))

    threads = [threading.Thread(target=spend, args=(s,)) for s in [state, other] * 20]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = granted.count(True)
    assert spent <= 25 and len(granted) == 40
    # a use one controller reserved and did not spend goes back; then every use is spent
    state.return_spares()
    other.return_spares()
    assert stored_uses(state) == 25 - spent
    while other.spend_token("tok_1"):
        spent += 1
    other.return_spares()
    assert spent == 25 and stored_uses(state) == 0 and not state.spend_token("tok_1")


def test_a_token_is_read_before_each_spend_and_written_once_per_reserve(
        state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    state.create_token(token(1000), "admin:a")
    reads, writes = [], []
    real_get, real_update = state.backend.get, state.backend.update

    def get(key: str) -> Stored | None:
        reads.append(key)
        return real_get(key)

    def update(old: Stored, body: dict[str, Any]) -> Stored:
        writes.append(old.body["uses_left"] - body["uses_left"])
        return real_update(old, body)

    monkeypatch.setattr(state.backend, "get", get)
    monkeypatch.setattr(state.backend, "update", update)
    assert all(state.spend_token("tok_1") for _ in range(100))
    assert len(reads) == 100  # exact: what another controller wrote counts at once
    block = state_module.RESERVE_MOST + 1
    assert writes == [block] * -(-100 // block)
    assert state.tokens()[0].uses_left == 900  # this controller counts its reserve
    assert stored_uses(state) == 1000 - len(writes) * block
    state.return_spares()
    assert stored_uses(state) == 900


@pytest.mark.parametrize(("uses", "reserved"), [(state_module.RESERVE_SHARE, 0),
                                                (state_module.RESERVE_SHARE + 1, 1)])
def test_a_token_with_few_uses_left_is_spent_one_use_at_a_time(state: State, uses: int,
                                                               reserved: int) -> None:
    state.create_token(token(uses), "admin:a")
    assert state.spend_token("tok_1")
    assert stored_uses(state) == uses - 1 - reserved


def test_a_revocation_elsewhere_stops_the_reserve_at_once(state: State, other: State) -> None:
    state.create_token(token(1000), "admin:a")
    assert state.spend_token("tok_1")
    other.refresh("token/tok_1")
    other.update_token("tok_1", revoke)  # SQLite tells `state` nothing: only its read can
    assert not state.spend_token("tok_1")
    assert state.tokens()[0].uses_left == stored_uses(state)  # the reserve is dropped


def test_an_expired_tokens_listing_counts_no_reserve(state: State) -> None:
    """No use of it can be spent any more: neither is the reserve counted as left."""
    state.create_token(token(1000), "admin:a")
    assert state.spend_token("tok_1") and state.tokens()[0].uses_left == 999
    state.update_token("tok_1", lambda t: setattr(t, "expires_at", 1.0))
    assert state.tokens()[0].uses_left == stored_uses(state) < 999


def test_a_revocation_between_the_read_and_the_reserve_spends_nothing(
        state: State, other: State, monkeypatch: pytest.MonkeyPatch) -> None:
    state.create_token(token(40), "admin:a")
    assert state.spend_token("tok_1")
    spending = state._spending["tok_1"]
    assert spending.spare == 2  # (40 - 1) // RESERVE_SHARE more than the one use
    before = state.refresh("token/tok_1")  # what the group's read will see: still valid
    other.refresh("token/tok_1")
    other.update_token("tok_1", revoke)  # ...revoked just after it
    real, calls = state.refresh, []

    def first_read_is_before(key: str) -> Stored | None:
        calls.append(key)
        return before if len(calls) == 1 else real(key)

    monkeypatch.setattr(state, "refresh", first_read_is_before)
    assert state._take_uses("tok_1", spending, 5) == 0  # 5 wanted: more than the reserve
    assert spending.spare == 0 and len(calls) == 2


def test_reserved_uses_go_back_after_a_quiet_spell(state: State,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "RETURN_AFTER", 0.2)
    state.create_token(token(1000), "admin:a")
    assert state.spend_token("tok_1")
    assert stored_uses(state) < 999
    for _ in range(100):
        if stored_uses(state) == 999:
            break
        threading.Event().wait(0.05)
    assert stored_uses(state) == 999 and state.tokens()[0].uses_left == 999


def test_a_refund_goes_to_the_reserve_and_back_to_the_token(state: State) -> None:
    state.create_token(token(3), "admin:a")
    assert state.spend_token("tok_1") and stored_uses(state) == 2
    state.refund_token("tok_1")
    assert state.tokens()[0].uses_left == 3 and stored_uses(state) == 2
    state.return_spares()
    assert stored_uses(state) == 3


@pytest.mark.parametrize("failure", [StoreUnavailable("context deadline exceeded"),
                                     RuntimeError("unforeseen")])
def test_reserved_uses_whose_return_fails_are_lost_never_given_twice(
        state: State, monkeypatch: pytest.MonkeyPatch, failure: Exception,
        caplog: pytest.LogCaptureFixture) -> None:
    """The failed write may have been applied all the same (its leader changed): giving
    the uses again could let the token be spent more than its uses."""
    state.create_token(token(1000), "admin:a")
    assert state.spend_token("tok_1")
    reserved = stored_uses(state)
    real = state.backend.update

    def applied_but_failed(old: Stored, body: dict[str, Any]) -> Stored:
        real(old, body)
        raise failure

    monkeypatch.setattr(state.backend, "update", applied_but_failed)
    state.return_spares()  # does not raise: the returning thread goes on
    monkeypatch.setattr(state.backend, "update", real)
    state.return_spares()
    assert stored_uses(state) == 999 > reserved  # given back once, by the failed write
    state.refresh("token/tok_1")
    assert state.tokens()[0].uses_left == 999  # and no reserve left to count
    assert "could not be given back and are lost" in caplog.text


def test_a_controller_that_is_stopping_reserves_nothing(state: State) -> None:
    state.create_token(token(1000), "admin:a")
    state._closing.set()  # close() has begun: no thread would give a reserve back
    assert state.spend_token("tok_1")
    assert stored_uses(state) == 999


def test_a_stopping_controller_gives_its_reserve_back(path: Path) -> None:
    first = State(SQLiteBackend(path))
    first.create_token(token(1000), "admin:a")
    assert first.spend_token("tok_1")
    first.close()
    again = State(SQLiteBackend(path))
    try:
        assert again.tokens()[0].uses_left == 999
    finally:
        again.close()


def test_loose_audit_events_are_bounded(state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "LOOSE_EVENTS_KEPT", 5)
    for i in range(8):
        state.audit("controller", "baseline.updated", f"nginx {i}")
    events = state.events()
    assert [e.reason for e in events] == [f"nginx {i}" for i in range(7, 2, -1)]


def test_events_filter_and_page(state: State) -> None:
    record = state.update_host("Pi-A", claim(make_record("Pi-A")))
    state.update_host("pi-b", claim(make_record("pi-b")))
    state.update_host("Pi-A", lambda doc: doc.change(doc.get(record.id), "admin:alice",
                                                     "node.approve", state="approved"))
    state.audit("controller", "baseline.created", "viz")

    def actions(**filters: Any) -> list[tuple[str, str]]:
        return [(e.hostname, e.action) for e in state.events(**filters)]

    assert actions(node_id=record.id) == [("Pi-A", "node.approve"), ("Pi-A", "node.request")]
    assert actions(hostname="PI-A") == [("Pi-A", "node.approve"), ("Pi-A", "node.request")]
    assert actions(actor="admin:alice") == [("Pi-A", "node.approve")]
    everything = state.events()
    assert [e.action for e in everything] == ["baseline.created", "node.approve",
                                              "node.request", "node.request"]
    page = state.events(limit=2)
    rest = state.events(before=page[-1].id)
    assert [e.id for e in page + rest] == [e.id for e in everything]


def test_last_seen_is_kept_only_for_records_that_exist(state: State) -> None:
    """Memory of when each Pi asked follows the records: one trimmed out of its document,
    or removed (here through the watch, as by another controller), leaves nothing behind,
    and nor does a record noted after it went; a record that stays keeps its time."""
    old = make_record("pi-1", state="replaced")
    joined = make_record("pi-1", state="joined")
    gone = make_record("pi-2")
    state.update_host("pi-1", lambda doc: doc.records.extend([old, joined]))
    state.update_host("pi-2", lambda doc: doc.records.append(gone))
    for record in (old, joined, gone):
        state.seen(record)
    assert set(state._seen) == {old.id, joined.id, gone.id}

    def more_replaced(doc: HostDoc) -> None:  # pushes `old` out of the kept archive
        doc.records.extend(make_record("pi-1", state="replaced")
                           for _ in range(ARCHIVED_KEPT))
    state.update_host("pi-1", more_replaced)
    assert state.record(old.id) is None
    state._changed("host/pi-2", None)
    state.seen(gone)
    assert set(state._seen) == {joined.id}
    assert state.last_seen(joined) > 0


def test_writes_elsewhere_reach_memory_through_watch(state: State, other: State) -> None:
    """What the backend reports (the swarm's events, for the shared store) is kept, unless
    memory already holds something newer."""
    record = other.update_host("pi-1", claim(make_record("pi-1")))
    stored = other.backend.get("host/pi-1")
    state._changed("host/pi-1", stored)
    assert state.record(record.id) is not None
    older = Stored(stored.key, stored.version - 1, dump({"hostname": "pi-1"}))
    state._changed("host/pi-1", older)
    assert state.record(record.id) is not None
    state._changed("host/pi-1", None)
    assert state.record(record.id) is None


class Unsaid(SQLiteBackend):
    """A backend that, like the swarm's, does not say a write's new version; it counts the
    writes it refused for a stale version."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.refused = 0

    def create(self, key: str, body: dict[str, Any]) -> Stored:
        super().create(key, body)
        return Stored(key, 0, dump(body), exact=False)

    def update(self, old: Stored, body: dict[str, Any]) -> Stored:
        try:
            super().update(old, body)
        except Conflict:
            self.refused += 1
            raise
        return Stored(old.key, old.version, dump(body), exact=False)


def test_a_write_whose_version_is_unsaid_is_read_again_before_the_next(path: Path) -> None:
    """Read first, not written on a version known to be gone (a write refused by the swarm
    is a round trip to the Raft leader for nothing)."""
    backend = Unsaid(path)
    state = State(backend)
    try:
        record = state.update_host("pi-1", claim(make_record("pi-1")))
        assert not state._stored("host/pi-1").exact
        state.update_host("pi-1", lambda doc: doc.change(doc.get(record.id), "admin:a",
                                                         "node.approve", state="approved"))
        state.update_host("pi-1", lambda doc: doc.change(doc.get(record.id), "admin:a",
                                                         "node.revoke", state="revoked"))
        assert backend.refused == 0
        assert state.record(record.id).state == "revoked"
        assert State(SQLiteBackend(path)).record(record.id).state == "revoked"
    finally:
        state.close()


def test_a_read_no_newer_than_what_our_write_replaced_is_not_kept(path: Path) -> None:
    """Such a read began before our write; the next one (newer) is kept."""
    state = State(Unsaid(path))
    try:
        record = state.update_host("pi-1", claim(make_record("pi-1")))
        before = state.backend.get("host/pi-1")
        state.update_host("pi-1", lambda doc: doc.change(doc.get(record.id), "admin:a",
                                                         "node.approve", state="approved"))
        state._changed("host/pi-1", before)
        assert state.record(record.id).state == "approved"
        after = state.backend.get("host/pi-1")
        state._changed("host/pi-1", after)
        assert state._stored("host/pi-1") == after
    finally:
        state.close()


def test_doc_version_changes_with_every_write_even_when_the_store_does_not_say(
        path: Path) -> None:
    state = State(Unsaid(path))
    try:
        seen = {state.doc_version("rules")}
        for text in ("a", "b", "c"):
            state.update_doc("rules", lambda _body, t=text: {"text": t})
            seen.add(state.doc_version("rules"))
        assert len(seen) == 4 and state.doc("rules") == {"text": "c"}
        state.update_doc("rules", lambda _body: None)
        assert state.doc_version("rules") == 0
    finally:
        state.close()


MALFORMED = {
    "host/no-records-list": {"hostname": "x", "records": 7},
    "host/record-without-fields": {"hostname": "x", "records": [{"id": "enr_1"}]},
    "host/thumbprint-not-text": {"hostname": "x", "records": [
        {**make_record("x").to_json(), "thumbprint": ["a"]}]},
    "host/event-not-an-object": {"hostname": "x", "events": ["node.request"]},
    "token/without-hash": {"id": "t"},
    "admin/hash-not-text": {"name": "a", "hash": {}},
    "audit/without-event": {},
}


def test_malformed_documents_are_skipped_at_start_and_the_rest_loaded(
        path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = SQLiteBackend(path)
    for key, body in MALFORMED.items():
        backend.create(key, body)
    good = make_record("pi-1", state="revoked")
    backend.create("host/pi-1", {"hostname": "pi-1", "records": [good.to_json()]})
    with caplog.at_level(logging.WARNING, logger="controller.state.state"):
        state = State(backend)
    try:
        assert [d.hostname for d in state.hosts()] == ["pi-1"]
        assert state.revoked_matching(good.thumbprint, "") is not None
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert all(key in logged for key in MALFORMED)
    finally:
        state.close()


def test_a_malformed_change_elsewhere_leaves_memory_as_it_was(state: State) -> None:
    record = state.update_host("pi-1", claim(make_record("pi-1")))
    stored = state.backend.get("host/pi-1")
    for body in MALFORMED.values():
        state._changed("host/pi-1", Stored("host/pi-1", stored.version + 1, dump(body)))
    assert state.record(record.id) is not None and state.pending_counts("")[0] == 1
    state._changed("host/pi-2", Stored("host/pi-2", 1, dump({"hostname": "pi-2"})))
    assert state.doc("host/pi-2") == {"hostname": "pi-2"}


def test_documents_of_a_newer_controller_are_read_without_their_new_fields(
        state: State) -> None:
    """A rolling upgrade: the newer controller writes fields this one does not know."""
    record = make_record("pi-1")
    token = Token("t1", "h" * 64, "d", "*", 3, 3, 1.0, 2e9, None, "admin:a")
    newer_event = {"at": 1.0, "actor": "a", "action": "node.request", "since": "v2"}
    state._changed("host/pi-1", Stored("host/pi-1", 1, dump({
        "hostname": "pi-1", "shard": 3, "records": [{**record.to_json(), "tpm": "yes"}],
        "events": [newer_event]})))
    state._changed("token/t1", Stored("token/t1", 1, dump({
        **token.to_json(), "scope": "lab", "events": [newer_event]})))
    assert state.record(record.id).hostname == "pi-1"
    assert state.token_by_hash("h" * 64).uses_left == 3
    assert state.token("t1").events[0].action == "node.request"


def test_a_hostnames_document_is_bounded_in_size_requests_first(state: State) -> None:
    """Up to 15 hostnames share a config (shelves): what requests and refusals add to a
    document stays under HOST_DOC_MOST; its decisions are never dropped for size."""
    pi = make_record("big-1")

    def history(doc: HostDoc) -> None:
        doc.add(pi, "agent:pi", "node.request")
        doc.change(pi, "token:t", "node.approve", state="approved")
        for i in range(EVENTS_KEPT // 2):
            doc.log(f"agent:t{i}", "token.refused", pi, "x" * 2000)
        doc.change(pi, "admin:a", "node.revoke", "y" * 1000, state="revoked")

    state.update_host("big-1", history)
    doc = state.host("big-1")
    assert len(json.dumps(doc.to_json())) <= HOST_DOC_MOST
    assert len(doc.events) < EVENTS_KEPT // 2
    assert [e.action for e in doc.events if e.action != "token.refused"] == [
        "node.approve", "node.revoke"]  # the request went first: a stranger's kind
    assert doc.events[-2].action == "token.refused"  # the newest of them are kept
