"""Enrollment decisions against what the store holds, not only this controller's memory,
and what strangers can make it write (through Flask, with a FakeSwarm and a real SQLite
file; a second State on that file stands for another controller)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller.state import REJECTED, REVOKED, HostDoc, State, StoreUnavailable
from controller.state.sqlite import SQLiteBackend

from ..helpers import Controller, swarm_node_id


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
    """The enrollment storm's hot path: the record was just written under its version."""
    secret = controller.create_token()["token"]
    read = reads(controller.state)
    answer = controller.agent("tok-1").enroll(bootstrap_token=secret).get_json()
    assert answer["status"] == "approved" and answer["grant"]
    assert read == []


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
