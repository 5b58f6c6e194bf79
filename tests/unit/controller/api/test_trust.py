"""Trust at the API: a decision names one claimant, strangers cannot grow the state without
bound, only the agent with the local secret is adopted, a rejoined Pi leaves no ghost.

The same attacks against the real TLS server: tests/attacks/."""

from __future__ import annotations

import time
from typing import Any

import pytest

import controller.sightings as sightings_module
from agent.wire.adoption import local_proof
from agent.wire.jws import verify_grant
from agent.wire.keys import fingerprint
from controller.sightings import Sightings
from controller.swarm import SwarmError

from ...helpers import Controller, FakeAgent, swarm_node_id

# ---- approving by name can no longer pick an impostor (issue 10, 2) ----------------------


def test_a_second_claim_makes_the_name_ambiguous(controller: Controller) -> None:
    """The real second manager waits for approval; a LAN host claims its name with a fresh
    key. Approving by name must not pick either: the admin is shown both."""
    real = controller.agent("mgr-2", source="10.0.0.12")
    mine = real.enroll().get_json()
    impostor = controller.agent("mgr-2", source="10.0.0.66")
    theirs = impostor.enroll().get_json()
    assert theirs["status"] == "pending"
    for action in ("approve", "reject", "revoke", "forget"):
        refused = controller.admin_post(f"/v1/nodes/mgr-2/{action}")
        body = refused.get_json()
        assert (refused.status_code, body["error"]) == (409, "ambiguous"), action
        claimants = {c["id"]: c for c in body["claimants"]}
        assert set(claimants) == {mine["id"], theirs["id"]}
        assert claimants[mine["id"]]["fingerprint"] == fingerprint(real.thumbprint)
        assert claimants[theirs["id"]]["source"] == "10.0.0.66"
        assert claimants[mine["id"]]["hardware_id"] == real.hardware_id
        assert claimants[mine["id"]]["first_seen"] > 0
        assert fingerprint(impostor.thumbprint) in body["message"]
    for record in (mine, theirs):  # nothing was decided
        assert controller.admin_get(f"/v1/nodes/{record['id']}").get_json()["state"] == \
            "pending"
    approved = controller.admin_post("/v1/nodes/mgr-2/approve",
                                     {"fingerprint": fingerprint(real.thumbprint)})
    assert approved.status_code == 200 and approved.get_json()["id"] == mine["id"]
    grant = real.poll(mine["id"]).get_json()["grant"]
    assert verify_grant(grant, controller.ca.public_key, real.thumbprint, "mgr-2").role == \
        "manager"
    assert "grant" not in impostor.poll(theirs["id"]).get_json()


def test_fingerprint_choices(controller: Controller) -> None:
    real = controller.agent("mgr-3")
    mine = real.enroll().get_json()["id"]
    controller.agent("mgr-3").enroll()
    fp = fingerprint(real.thumbprint)

    def approve(ref: str, fingerprint: str) -> Any:
        return controller.admin_post(f"/v1/nodes/{ref}/approve", {"fingerprint": fingerprint})

    short = approve("mgr-3", fp[:6])
    assert (short.status_code, short.get_json()["error"]) == (400, "bad_fingerprint")
    wrong = approve("mgr-3", "0000-0000-0000")
    assert (wrong.status_code, wrong.get_json()["error"]) == (404, "not_found")
    other = controller.agent("man-1").enroll().get_json()["id"]
    mismatch = approve(other, fp)  # an id and a fingerprint that disagree
    assert (mismatch.status_code, mismatch.get_json()["error"]) == (409, "fingerprint_mismatch")
    # a unique prefix, in any case, with or without dashes
    by_prefix = approve("MGR-3", fp.replace("-", "")[:12].upper())
    assert by_prefix.status_code == 200 and by_prefix.get_json()["id"] == mine


def test_a_single_open_claim_is_still_approved_by_name(controller: Controller) -> None:
    record = controller.agent("mgr-4").enroll().get_json()["id"]
    response = controller.admin_post("/v1/nodes/mgr-4/approve")
    assert response.status_code == 200 and response.get_json()["id"] == record


def test_a_joined_pi_and_its_replacement_are_two_claims(controller: Controller) -> None:
    old = controller.agent("man-5")
    answer = old.enroll().get_json()
    controller.admin_post(f"/v1/nodes/{answer['id']}/approve")
    node = swarm_node_id()
    controller.swarm.add_member(node, "man-5")
    old.joined(answer["id"], node)
    controller.swarm.members[node]["Status"]["State"] = "down"
    new = controller.agent("man-5").enroll().get_json()
    refused = controller.admin_post("/v1/nodes/man-5/approve")
    assert refused.get_json()["error"] == "ambiguous"
    assert controller.admin_post(f"/v1/nodes/{new['id']}/approve").status_code == 200


def test_identity_is_shown_where_the_admin_decides(controller: Controller) -> None:
    pi = controller.agent("man-6", source="10.0.0.36")
    record = pi.enroll().get_json()["id"]
    (row,) = [n for n in controller.admin_get("/v1/nodes").get_json()["nodes"]
              if n["id"] == record]
    shown = controller.admin_get(f"/v1/nodes/{record}").get_json()
    for view in (row, shown):
        assert view["fingerprint"] == fingerprint(pi.thumbprint)
        assert view["hardware_id"] == pi.hardware_id and view["source"] == "10.0.0.36"
        assert view["first_seen"] > 0


# ---- what strangers can make us store is bounded (issue 10, 3) -----------------------------


def test_waiting_requests_are_capped_per_source(make_controller: Any) -> None:
    controller = make_controller(max_pending_per_source=3)
    for i in range(3):
        assert controller.agent(f"man-{i}", source="10.0.0.99").enroll().status_code == 202
    refused = controller.agent("man-9", source="10.0.0.99").enroll()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    body = refused.get_json()
    assert body["error"] == "too_many_requests" and "10.0.0.99" in body["message"]
    assert "max_pending_per_source" in body["message"] and body["limit"] == 3
    # another address still gets in, and the refused Pi left nothing behind
    assert controller.agent("man-9", source="10.0.0.98").enroll().status_code == 202
    assert len([r for d in controller.state.hosts() for r in d.records]) == 4


def test_waiting_requests_are_capped_in_all_and_per_name(make_controller: Any) -> None:
    controller = make_controller(max_pending=3, max_claims_per_hostname=2)
    assert controller.agent("man-1", source="10.0.0.1").enroll().status_code == 202
    assert controller.agent("man-1", source="10.0.0.2").enroll().status_code == 202
    third = controller.agent("man-1", source="10.0.0.3").enroll()
    assert third.status_code == 429 and "max_claims_per_hostname" in third.get_json()["message"]
    assert controller.agent("man-2", source="10.0.0.4").enroll().status_code == 202
    full = controller.agent("man-3", source="10.0.0.5").enroll()
    assert full.status_code == 429 and "max_pending" in full.get_json()["message"]
    # an admin decision makes room
    pending = [r for d in controller.state.hosts() for r in d.records]
    controller.admin_post(f"/v1/nodes/{pending[0].id}/reject")
    assert controller.agent("man-3", source="10.0.0.5").enroll().status_code == 202


def test_a_storm_with_a_valid_token_is_never_capped(make_controller: Any) -> None:
    controller = make_controller(max_pending=2, max_pending_per_source=2)
    secret = controller.create_token(uses=30)["token"]
    answers = [controller.agent(f"tok-{i}", source="10.0.0.7").enroll(
        bootstrap_token=secret).get_json() for i in range(30)]
    assert [a["status"] for a in answers] == ["approved"] * 30
    assert controller.state.tokens()[0].uses_left == 0


def test_unmatched_requests_leave_nothing(controller: Controller) -> None:
    for i in range(20):
        body = controller.agent(f"other-{i}").enroll().get_json()
        assert (body["status"], body["id"]) == ("rejected", "")
    assert list(controller.state.hosts()) == []
    assert controller.state.events() == [e for e in controller.state.events()
                                         if e.action == "admin.create"]


def test_repeated_bad_tokens_are_one_audit_row(controller: Controller,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import controller.enrollment as enrollment_module

    monkeypatch.setattr(enrollment_module, "REFUSAL_QUIET", 0.0)
    pi = controller.agent("tok-1")
    for _ in range(10):
        assert pi.enroll(bootstrap_token="seb_" + "x" * 43).status_code == 202
    (refused,) = controller.state.events(action="token.refused")
    assert refused.count == 10
    row = controller.admin_get("/v1/audit", query_string={"action": "token.refused"}).get_json()
    assert [e["count"] for e in row["events"]] == [10]


def test_sightings_are_capped_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sightings_module.time, "time", lambda: now[0])
    seen = Sightings(capacity=100, ttl=60)
    for i in range(20_000):
        seen.record(f"fake-{i}", f"id{i}", "hw", "new", "", "armv6l", ["10.0.0.9"])
    kept = seen.list()
    assert len(kept) == 100 and {s.hostname for s in kept} == {f"fake-{i}" for i in
                                                               range(19_900, 20_000)}
    seen.record("fake-19999", "id19999", "hw", "pending", "", "armv6l", [])
    assert next(s for s in seen.list() if s.hostname == "fake-19999").state == "pending"
    now[0] += 61
    assert seen.list() == []


def test_lists_are_paged(controller: Controller) -> None:
    for i in range(7):
        controller.agent(f"man-{i}").enroll()
    seen, cursor = [], None
    while True:
        query = {"limit": "3", **({"after": cursor} if cursor else {})}
        page = controller.admin_get("/v1/nodes", query_string=query).get_json()
        assert len(page["nodes"]) <= 3
        seen += [n["hostname"] for n in page["nodes"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["ctl-1"] + [f"man-{i}" for i in range(7)]  # ctl-1: unmanaged
    events, before = [], None
    while True:
        query = {"limit": "4", **({"before": before} if before else {})}
        page = controller.admin_get("/v1/audit", query_string=query).get_json()
        events += page["events"]
        before = page["next"]
        if before is None:
            break
    assert len(events) == 8  # seven requests and the admin's creation
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    bad = controller.admin_get("/v1/nodes", query_string={"limit": "0"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_query"


# ---- the controller's own Pi: adopted only with the local secret (issue 10, 5) ---------------


def local_request(controller: Controller, pi: FakeAgent, proof: str = "") -> dict[str, Any]:
    local = controller.swarm.local_node
    swarm = {"node_id": local.node_id, "state": "active", "manager": True,
             "cluster_id": local.cluster_id}
    return pi.enroll(swarm=swarm, local_proof=proof).get_json()


CATCH_ALL = '[[rule]]\nmatch = "*"\nrole = "worker"\napprove = "manual"\n'


def test_naming_the_managers_node_id_is_not_enough(make_controller: Any) -> None:
    """Swarm node ids are no secret (the CN of every node certificate): a local caller
    with a fresh key who names the manager's node id is just another request."""
    controller = make_controller(CATCH_ALL)
    stranger = controller.agent("ctl-1", source="127.0.0.1")
    answer = local_request(controller, stranger)
    assert answer["status"] == "pending" and answer.get("role") != "joined"
    forged = local_request(controller, controller.agent("ctl-1", source="127.0.0.1"),
                           proof="A" * 43)
    assert forged["status"] == "pending"


def test_the_local_agent_is_adopted_once(controller: Controller) -> None:
    secret = controller.config.adoption_secret.read_bytes()
    assert controller.config.adoption_secret.stat().st_mode & 0o077 == 0
    local = controller.agent("ctl-1")
    answer = local_request(controller, local, local_proof(secret, local.thumbprint))
    assert (answer["status"], answer["role"]) == ("joined", "manager")
    again = local_request(controller, local, local_proof(secret, local.thumbprint))
    assert again["id"] == answer["id"]
    # a second key with a valid proof of its own (the Pi re-flashed) is not adopted twice
    second = controller.agent("ctl-1", hardware_id=local.hardware_id)
    other = local_request(controller, second, local_proof(secret, second.thumbprint))
    assert other["status"] == "pending"
    adopted = controller.state.events(action="node.adopt")
    assert len(adopted) == 1


def test_the_local_agent_is_asked_again_while_its_daemon_cannot_answer(
        controller: Controller) -> None:
    """Not handled as a stranger's Pi (a pending record would hide it for good): 503, and
    adopted once the daemon answers."""
    secret = controller.config.adoption_secret.read_bytes()
    local = controller.agent("ctl-1")
    controller.swarm.fail_local = SwarmError("docker_unavailable", "the local Docker daemon "
                                             "does not answer; is it running?", 503)
    proof = local_proof(secret, local.thumbprint)
    refused = local.enroll(swarm={"node_id": controller.swarm.local_node.node_id,
                                  "state": "active", "manager": True}, local_proof=proof)
    assert (refused.status_code, refused.get_json()["error"]) == (503, "docker_unavailable")
    assert controller.state.in_state("pending") == []
    controller.swarm.fail_local = None
    answer = local_request(controller, local, local_proof(secret, local.thumbprint))
    assert (answer["status"], answer["role"]) == ("joined", "manager")


# ---- a Pi that rejoins under a new node id leaves no ghost (issue 10, 5) ---------------------


def test_a_rejoin_removes_the_old_node_once_the_new_one_is_ready(controller: Controller
                                                                 ) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-7")
    answer = pi.enroll(bootstrap_token=secret).get_json()
    first = swarm_node_id()
    controller.swarm.add_member(first, "tok-7")
    pi.joined(answer["id"], first)
    controller.swarm.members[first]["Status"]["State"] = "down"  # its Docker state wiped
    again = pi.enroll(swarm={"state": "inactive"}).get_json()
    assert again["status"] == "approved" and again["id"] == answer["id"]
    second = swarm_node_id()
    controller.swarm.add_member(second, "tok-7")
    assert pi.joined(answer["id"], second).get_json()["status"] == "joined"
    assert controller.swarm.removed == [first] and first not in controller.swarm.members
    joined = controller.state.events(action="node.joined", node_id=answer["id"])[0]
    assert f"removed its old swarm node {first}" in joined.reason


def test_a_ready_old_node_is_left_alone(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-8")
    answer = pi.enroll(bootstrap_token=secret).get_json()
    first = swarm_node_id()
    controller.swarm.add_member(first, "tok-8")
    pi.joined(answer["id"], first)
    pi.enroll(swarm={"state": "inactive"})
    second = swarm_node_id()
    controller.swarm.add_member(second, "tok-8")
    pi.joined(answer["id"], second)
    assert controller.swarm.removed == []  # still Ready: not ours to remove


def test_last_seen_is_kept_in_memory_and_written_now_and_then(controller: Controller) -> None:
    pi = controller.agent("man-1")
    record = pi.enroll().get_json()["id"]
    stored = controller.state.backend.get("host/man-1")
    time.sleep(0.01)
    pi.poll(record)
    assert controller.state.backend.get("host/man-1") == stored  # no write for a poll
    shown = controller.admin_get(f"/v1/nodes/{record}").get_json()
    assert shown["last_seen"] > stored.body["records"][0]["last_seen"]
