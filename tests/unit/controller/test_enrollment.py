"""Enrollment decisions against what the store holds, not only this controller's memory,
and what strangers can make it write (through Flask, with a FakeSwarm and a real SQLite
file; a second State on that file stands for another controller)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import controller.enrollment as enrollment_module
from controller.state import REJECTED, REVOKED, HostDoc, State, StoreUnavailable
from controller.state.sqlite import SQLiteBackend

from ..helpers import Controller, FakeAgent, swarm_node_id


@pytest.fixture
def elsewhere(controller: Controller) -> Iterator[State]:
    """Another controller on the same store (an admin acting through it)."""
    state = State(SQLiteBackend(controller.config.database))
    yield state
    state.close()


def decide_elsewhere(other: State, hostname: str, record_id: str, state: str) -> None:
    def change(doc: HostDoc) -> None:
        doc.change(doc.get(record_id), "admin:bob", f"node.{state}", state=state)
    other.refresh(f"host/{hostname}")
    other.update_host(hostname, change)


def reads(state: State) -> list[str]:
    """The keys this controller reads from its store from now on."""
    read: list[str] = []
    get = state.backend.get

    def counting(key: str) -> Any:
        read.append(key)
        return get(key)
    state.backend.get = counting  # type: ignore[method-assign]
    return read


@pytest.mark.parametrize("decision", [REJECTED, REVOKED])
def test_no_grant_for_a_record_decided_against_through_another_controller(
        controller: Controller, elsewhere: State, decision: str) -> None:
    pi = controller.agent("mgr-1")
    record_id = pi.enroll().get_json()["id"]
    controller.admin_post(f"/v1/nodes/{record_id}/approve")
    decide_elsewhere(elsewhere, "mgr-1", record_id, decision)
    assert controller.state.record(record_id).state == "approved"  # memory has not heard
    for answer in (pi.poll(record_id).get_json(), pi.enroll().get_json()):
        assert answer["status"] == decision and "grant" not in answer


def test_no_promotion_of_a_record_revoked_through_another_controller(
        controller: Controller, elsewhere: State) -> None:
    pi = controller.agent("mgr-1")
    record_id = pi.enroll().get_json()["id"]
    controller.admin_post(f"/v1/nodes/{record_id}/approve")
    assert "grant" in pi.poll(record_id).get_json()
    decide_elsewhere(elsewhere, "mgr-1", record_id, REVOKED)
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "mgr-1")
    response = pi.joined(record_id, node_id)
    assert response.status_code == 409 and response.get_json()["error"] == "not_approved"
    assert controller.swarm.finished == []  # not promoted to manager


def test_a_grant_on_the_first_request_costs_no_read(controller: Controller) -> None:
    """The enrollment storm's hot path: the record was just written under its version;
    the one read is the token's, so that a revocation on another controller counts."""
    created = controller.create_token()
    read = reads(controller.state)
    answer = controller.agent("tok-1").enroll(bootstrap_token=created["token"]).get_json()
    assert answer["status"] == "approved" and answer["grant"]
    assert read == [f"token/{created['id']}"]


def test_no_grant_while_the_store_cannot_be_read(controller: Controller) -> None:
    """A failover: the record cannot be checked, so the Pi is told to ask again."""
    pi = controller.agent("mgr-1")
    record_id = pi.enroll().get_json()["id"]
    controller.admin_post(f"/v1/nodes/{record_id}/approve")

    def leaderless(key: str) -> None:
        raise StoreUnavailable("the swarm does not have a leader")
    controller.state.backend.get = leaderless  # type: ignore[assignment]
    response = pi.poll(record_id)
    assert response.status_code == 503 and response.get_json()["error"] == "quorum_lost"


def writes(state: State) -> list[str]:
    """The keys this controller writes from now on."""
    written: list[str] = []
    backend = state.backend
    create, update = backend.create, backend.update

    def creating(key: str, body: Any) -> Any:
        written.append(key)
        return create(key, body)

    def updating(old: Any, body: Any) -> Any:
        written.append(old.key)
        return update(old, body)
    backend.create, backend.update = creating, updating  # type: ignore[method-assign]
    return written


def test_a_pending_stranger_saying_new_things_writes_once_a_minute(
        controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    pi = controller.agent("mgr-1")
    record_id = pi.enroll().get_json()["id"]
    written = writes(controller.state)
    for i in range(50):
        assert pi.enroll(agent_version=f"0.1.{i % 2 + 1}").status_code == 202
    assert written == []
    monkeypatch.setattr(enrollment_module, "FACTS_QUIET", 0.0)  # a minute later
    pi.enroll(agent_version="0.2.0")
    assert written == ["host/mgr-1"]
    assert controller.state.record(record_id).agent_version == "0.2.0"


def test_keys_taking_turns_with_bad_tokens_cost_a_write_a_minute_each(
        controller: Controller) -> None:
    """And the refusals are counted in one event per record, not one event each."""
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-7")
    assert pi.enroll(bootstrap_token=secret).status_code == 200
    strangers = [controller.agent("tok-7"), controller.agent("tok-7", source="10.0.0.22")]
    bad = "sebt_" + "x" * 43
    for stranger in strangers:
        stranger.enroll(bootstrap_token=bad)
    written = writes(controller.state)
    for _ in range(60):
        for stranger in strangers:
            assert stranger.enroll(bootstrap_token=bad).status_code == 202
    assert written == []
    refused = controller.state.events(hostname="tok-7", action="token.refused")
    assert len(refused) == 2


def test_refusals_after_a_quiet_minute_count_in_each_record_s_one_event(
        controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    strangers = [controller.agent("tok-7"), controller.agent("tok-7", source="10.0.0.22")]
    bad = "sebt_" + "x" * 43
    monkeypatch.setattr(enrollment_module, "REFUSAL_QUIET", 0.0)  # a minute later each time
    for _ in range(4):
        for stranger in strangers:
            stranger.enroll(bootstrap_token=bad)
    refused = controller.state.events(hostname="tok-7", action="token.refused")
    assert [e.count for e in refused] == [4, 4]
    assert {e.actor for e in refused} == {f"agent:{s.thumbprint}" for s in strangers}


class StalledWrites:
    """The store's first write of each document stalls until `go` (a Docker API call that
    hangs); `stalled` counts the writes under way, `answered` the requests told already."""

    def __init__(self, state: State) -> None:
        self.go = threading.Event()
        self.moved = threading.Condition()
        self.stalled: list[str] = []
        self.answered: dict[str, int] = {}
        create = state.backend.create

        def creating(key: str, body: Any) -> Any:
            with self.moved:
                self.stalled.append(key)
                self.moved.notify_all()
            self.go.wait(120)
            return create(key, body)
        state.backend.create = creating  # type: ignore[method-assign]

    def ask(self, pi: FakeAgent) -> threading.Thread:
        """`pi` enrolls in a thread of its own (its own test client, as its own request)."""
        pi.client = pi.client.application.test_client()

        def run() -> None:
            status = pi.enroll().status_code
            with self.moved:
                self.answered[pi.hostname] = status
                self.moved.notify_all()
        thread = threading.Thread(target=run, name=pi.hostname)
        thread.start()
        return thread

    def until(self, what: Callable[[], bool]) -> bool:
        with self.moved:
            return self.moved.wait_for(what, timeout=60)


def test_a_stalled_write_holds_up_no_other_request(controller: Controller) -> None:
    """A waiting request's write is a Docker API call: while one hangs, the next request
    of the same controller (even from the same address) still writes its own."""
    store = StalledWrites(controller.state)
    threads = [store.ask(controller.agent("man-1"))]
    try:
        assert store.until(lambda: store.stalled == ["host/man-1"])
        threads.append(store.ask(controller.agent("man-2")))
        assert store.until(lambda: "host/man-2" in store.stalled)
    finally:
        store.go.set()
        for thread in threads:
            thread.join()
    assert store.answered == {"man-1": 202, "man-2": 202}


def test_waiting_requests_are_capped_while_their_writes_are_under_way(
        make_controller: Callable[..., Controller]) -> None:
    """Checking the limits and taking the room are one step: with every write stalled
    (none stored yet), a flood gets no more room than the limits allow."""
    controller = make_controller(max_pending=5, max_pending_per_source=3)
    store = StalledWrites(controller.state)
    pis = [controller.agent(f"man-a{i}", source="10.0.0.9") for i in range(8)] + \
        [controller.agent(f"man-b{i}", source=f"10.0.1.{i}") for i in range(8)]
    threads = [store.ask(pi) for pi in pis]
    try:  # nobody waits on another's write: each is told, or its write is under way
        assert store.until(lambda: len(store.answered) + len(store.stalled) == len(pis))
    finally:
        store.go.set()
        for thread in threads:
            thread.join()
    assert sorted(store.answered.values()) == [202] * 5 + [429] * 11
    stored = [r for doc in controller.state.hosts() for r in doc.records]
    assert len(stored) == 5 and len([r for r in stored if r.source == "10.0.0.9"]) <= 3
