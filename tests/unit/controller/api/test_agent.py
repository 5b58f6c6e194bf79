"""The agent-facing API, end to end through Flask with a FakeSwarm: signed requests only."""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import OKPKey

import controller.enrollment as enrollment_module
from agent.wire.jws import sign_request, verify_grant
from agent.wire.messages import MAX_BODY_BYTES
from controller.swarm import SwarmError

from ...helpers import Controller, FakeSwarm, ed25519_compact, swarm_node_id


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == code, body
    assert set(body) == {"error", "message"} and body["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def _grant_of(controller: Controller, agent, body: dict):
    return verify_grant(body["grant"], controller.ca.public_key, agent.thumbprint, agent.hostname)


def test_nonce_endpoint_issues_fresh_nonces(controller: Controller) -> None:
    first = controller.client.head("/v1/nonce")
    second = controller.client.get("/v1/nonce")
    assert first.status_code == second.status_code == 204
    assert first.headers["Replay-Nonce"] != second.headers["Replay-Nonce"]
    assert first.headers["Cache-Control"] == "no-store"


def test_token_rule_with_valid_token_grants_at_once(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-1")
    response = pi.enroll(bootstrap_token=secret)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "approved" and body["id"].startswith("enr_")
    grant = _grant_of(controller, pi, body)
    assert grant.join_token == controller.swarm.worker
    assert grant.join_token != controller.swarm.manager_join_token
    assert (grant.role, grant.labels, grant.enrollment) == ("worker", {"zone": "lab"}, body["id"])
    assert grant.managers == ["10.0.0.1:2377"]
    assert grant.cluster == controller.swarm.local_node.cluster_id
    assert grant.agent == pi.thumbprint
    assert grant.controllers == [controller.config.url]  # where to fail over to
    assert body["controllers"] == [controller.config.url]  # every answer says it too


def test_every_answer_carries_a_new_nonce(controller: Controller) -> None:
    pi = controller.agent("man-1")
    response = pi.enroll()
    nonce = response.headers["Replay-Nonce"]
    # The nonce from the answer is good for the next request.
    again = pi.post("/v1/enrollments", pi.request_payload(), nonce=nonce)
    assert again.status_code == 202


def test_token_rule_without_token_waits(controller: Controller) -> None:
    response = controller.agent("tok-2").enroll()
    assert response.status_code == 202
    assert response.get_json()["status"] == "pending"
    assert "grant" not in response.get_json()


def test_token_rule_with_bad_token_waits(controller: Controller) -> None:
    response = controller.agent("tok-3").enroll(bootstrap_token="seb_" + "x" * 43)
    assert response.status_code == 202 and response.get_json()["status"] == "pending"
    refused = controller.state.events(action="token.refused")
    assert [e.hostname for e in refused] == ["tok-3"]


def test_token_for_another_hostname_waits(controller: Controller) -> None:
    secret = controller.create_token(hostname_glob="tok-9*")["token"]
    assert controller.agent("tok-1").enroll(bootstrap_token=secret).status_code == 202
    assert controller.agent("tok-90").enroll(bootstrap_token=secret).status_code == 200


def test_token_with_two_uses_approves_two(controller: Controller) -> None:
    secret = controller.create_token(uses=2)["token"]
    codes = [controller.agent(f"tok-{i}").enroll(bootstrap_token=secret).status_code
             for i in range(3)]
    assert codes == [200, 200, 202]


def test_token_on_manual_rule_does_not_approve(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    response = controller.agent("man-1").enroll(bootstrap_token=secret)
    assert response.status_code == 202
    assert controller.admin_get("/v1/tokens").get_json()["tokens"][0]["uses_left"] == 1


def test_manual_rule_pending_then_approved(controller: Controller) -> None:
    pi = controller.agent("mgr-1")
    response = pi.enroll()
    assert response.status_code == 202
    body = response.get_json()
    assert (body["status"], body["role"]) == ("pending", "manager")
    enrollment = body["id"]

    poll = pi.poll(enrollment)
    assert poll.status_code == 202 and poll.get_json()["status"] == "pending"

    approved = controller.admin_post(f"/v1/nodes/{enrollment}/approve", {"reason": "rack 1"})
    assert approved.status_code == 200 and approved.get_json()["state"] == "approved"

    poll = pi.poll(enrollment)
    assert poll.status_code == 200
    body = poll.get_json()
    assert body["status"] == "approved"
    grant = _grant_of(controller, pi, body)
    # Managers join with the worker token and are promoted afterwards.
    assert grant.role == "manager" and grant.join_token == controller.swarm.worker
    assert grant.labels == {"pi.model": "3b", "zone": "rack-1"}


def test_approve_by_hostname(controller: Controller) -> None:
    pi = controller.agent("man-7")
    enrollment = pi.enroll().get_json()["id"]
    assert controller.admin_post("/v1/nodes/MAN-7/approve").status_code == 200
    assert pi.poll(enrollment).get_json()["status"] == "approved"


def test_reject_then_poll_says_rejected(controller: Controller) -> None:
    pi = controller.agent("man-2")
    enrollment = pi.enroll().get_json()["id"]
    rejected = controller.admin_post(f"/v1/nodes/{enrollment}/reject", {"reason": "not ours"})
    assert rejected.status_code == 200
    poll = pi.poll(enrollment)
    assert poll.status_code == 200
    body = poll.get_json()
    assert (body["status"], body["reason"]) == ("rejected", "not ours")
    assert "grant" not in body


def test_no_rule_rejected_with_reason(controller: Controller) -> None:
    response = controller.agent("other-1").enroll()
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "rejected"
    assert "no hostname rule" in body["reason"] and "other-1" in body["reason"]
    assert "grant" not in body


def test_auto_rule_approves_at_once(make_controller) -> None:
    controller = make_controller('[[rule]]\nmatch = "*"\napprove = "auto"\n')
    pi = controller.agent("lab-1")
    response = pi.enroll()
    assert response.status_code == 200
    assert _grant_of(controller, pi, response.get_json()).role == "worker"


def test_joined_report_finishes_the_join(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tmgr-1")
    response = pi.enroll(bootstrap_token=secret)
    assert response.status_code == 200
    enrollment = response.get_json()["id"]
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "tmgr-1")  # what `docker swarm join` would do
    response = pi.joined(enrollment, node_id)
    assert response.status_code == 200
    assert response.get_json()["status"] == "joined"
    assert controller.swarm.finished == [(node_id, "manager", {"pi.model": "4b"}, "drain")]
    assert controller.swarm.members[node_id]["Spec"]["Role"] == "manager"
    shown = controller.admin_get(f"/v1/nodes/{enrollment}").get_json()
    assert (shown["state"], shown["swarm_node_id"]) == ("joined", node_id)
    # Reporting again is harmless and does not redo the swarm update.
    assert pi.joined(enrollment, node_id).get_json()["status"] == "joined"
    assert len(controller.swarm.finished) == 1
    # Polling after the join says joined, with no grant.
    assert pi.poll(enrollment).get_json() == {"id": enrollment, "status": "joined",
                                               "role": "manager",
                                               "controllers": [controller.config.url]}


def test_joined_report_applies_worker_rule(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-7")
    enrollment = pi.enroll(bootstrap_token=secret).get_json()["id"]
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "TOK-7")
    assert pi.joined(enrollment, node_id).status_code == 200
    assert controller.swarm.finished == [(node_id, "worker", {"zone": "lab"}, "pause")]


def test_manual_approval_then_join(controller: Controller) -> None:
    pi = controller.agent("mgr-2")
    enrollment = pi.enroll().get_json()["id"]
    assert controller.admin_post(f"/v1/nodes/{enrollment}/approve").status_code == 200
    assert pi.poll(enrollment).status_code == 200
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "mgr-2")
    assert pi.joined(enrollment, node_id).get_json()["status"] == "joined"
    assert controller.swarm.finished == [
        (node_id, "manager", {"pi.model": "3b", "zone": "rack-1"}, "drain")]


def test_joined_before_approval_refused(controller: Controller) -> None:
    pi = controller.agent("man-3")
    enrollment = pi.enroll().get_json()["id"]
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "man-3")
    _error(pi.joined(enrollment, node_id), 409, "not_approved")
    assert controller.swarm.finished == []


def test_joined_with_node_not_in_swarm_refused(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-4")
    enrollment = pi.enroll(bootstrap_token=secret).get_json()["id"]
    _error(pi.joined(enrollment, swarm_node_id()), 409, "node_not_in_swarm")
    assert controller.admin_get(f"/v1/nodes/{enrollment}").get_json()["state"] == "approved"


def test_joined_with_node_of_another_hostname_refused(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-5")
    enrollment = pi.enroll(bootstrap_token=secret).get_json()["id"]
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "someone-else")
    _error(pi.joined(enrollment, node_id), 409, "hostname_mismatch")
    assert controller.swarm.finished == []


def test_same_agent_again_gets_same_record(controller: Controller,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pi = controller.agent("man-4")
    first = pi.enroll().get_json()["id"]
    monkeypatch.setattr(enrollment_module, "FACTS_QUIET", 0.0)  # as if a minute had passed
    second = pi.enroll(addresses=["10.0.0.99"]).get_json()["id"]
    assert first == second
    nodes = [n for n in controller.admin_get("/v1/nodes").get_json()["nodes"]
             if n["hostname"] == "man-4"]
    assert len(nodes) == 1 and nodes[0]["addresses"] == ["10.0.0.99"]


def test_same_agent_again_after_approval_is_regranted(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-8")
    first = pi.enroll(bootstrap_token=secret).get_json()["id"]
    again = pi.enroll()  # no token this time: the approval stands
    assert again.status_code == 200 and again.get_json()["id"] == first
    assert _grant_of(controller, pi, again.get_json()).enrollment == first


def test_joined_agent_that_left_the_swarm_is_regranted(controller: Controller) -> None:
    secret = controller.create_token()["token"]
    pi = controller.agent("tok-9")
    enrollment = pi.enroll(bootstrap_token=secret).get_json()["id"]
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "tok-9")
    assert pi.joined(enrollment, node_id).get_json()["status"] == "joined"
    # Restarted, no longer in the swarm: granted again without a new approval.
    again = pi.enroll(swarm={"state": "inactive"})
    assert again.status_code == 200 and again.get_json()["id"] == enrollment
    assert _grant_of(controller, pi, again.get_json()).enrollment == enrollment


def test_other_key_for_known_hostname_is_a_replacement(controller: Controller) -> None:
    old = controller.agent("man-6")
    first = old.enroll().get_json()["id"]
    new = controller.agent("man-6")  # reflashed card: new key, new hardware
    response = new.enroll()
    assert response.status_code == 202
    assert response.get_json()["id"] != first
    nodes = {n["id"]: n for n in controller.admin_get("/v1/nodes").get_json()["nodes"]}
    assert nodes[response.get_json()["id"]]["kind"] == "replacement"
    assert first in nodes


def test_replacement_with_valid_token_is_approved(controller: Controller) -> None:
    # Design: a replacement "waits for approval (or a valid token)".
    secret = controller.create_token(uses=2)["token"]
    old = controller.agent("tok-6")
    answer = old.enroll(bootstrap_token=secret).get_json()
    node = swarm_node_id()
    controller.swarm.add_member(node, "tok-6")
    old.joined(answer["id"], node)
    controller.swarm.members[node]["Status"]["State"] = "down"  # the old Pi is gone
    replacement = controller.agent("tok-6").enroll(bootstrap_token=secret)
    assert replacement.get_json()["status"] == "approved"


def test_a_fresh_grant_holds_a_second_claimant_even_with_a_token(controller: Controller
                                                                 ) -> None:
    """Two Pis racing for one new name, both with a token: the first is granted; the
    second must not be granted too while the first one's grant may still be used."""
    secret = controller.create_token(uses=2)["token"]
    first = controller.agent("tok-7").enroll(bootstrap_token=secret).get_json()
    second = controller.agent("tok-7").enroll(bootstrap_token=secret).get_json()
    assert first["status"] == "approved"
    assert second["status"] == "pending" and "granted to another Pi" in second["reason"]
    assert "grant" not in second
    assert controller.state.tokens()[0].uses_left == 1  # the held one spent no use


def test_poll_of_another_agents_enrollment_is_404(controller: Controller) -> None:
    owner = controller.agent("man-8")
    enrollment = owner.enroll().get_json()["id"]
    stranger = controller.agent("man-9")
    _error(stranger.poll(enrollment), 404, "not_found")
    _error(stranger.joined(enrollment, swarm_node_id()), 404, "not_found")


def test_poll_of_unknown_enrollment_is_404(controller: Controller) -> None:
    _error(controller.agent("man-1").poll("enr_000000000000"), 404, "not_found")


def test_reused_nonce_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    nonce = pi.nonce()
    assert pi.post("/v1/enrollments", pi.request_payload(), nonce=nonce).status_code == 202
    _error(pi.post("/v1/enrollments", pi.request_payload(), nonce=nonce), 400, "bad_nonce")


def test_made_up_nonce_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    _error(pi.post("/v1/enrollments", pi.request_payload(), nonce="made-up"), 400, "bad_nonce")


def test_url_mismatch_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    enrollment = pi.enroll().get_json()["id"]
    # Signed for the poll endpoint, sent to the joined endpoint.
    body = sign_request(pi.key, {"node_id": swarm_node_id()}, pi.nonce(),
                        f"/v1/enrollments/{enrollment}/poll")
    _error(pi.post_raw(f"/v1/enrollments/{enrollment}/joined", body), 400, "bad_url")


def test_bad_signature_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    impostor = OKPKey.generate_key("Ed25519")
    header = {"alg": "Ed25519", "jwk": dict(pi.key.as_dict(private=False)), "nonce": pi.nonce(),
              "url": "/v1/enrollments"}
    body = ed25519_compact(impostor, header, json.dumps(pi.request_payload()))
    _error(pi.post_raw("/v1/enrollments", body), 400, "bad_signature")
    assert [r for d in controller.state.hosts() for r in d.records] == []


def test_oversized_body_is_413_json(controller: Controller) -> None:
    pi = controller.agent("man-1")
    _error(pi.post_raw("/v1/enrollments", "x" * (MAX_BODY_BYTES + 1)), 413, "body_too_large")


def test_oversized_signed_request_is_413_json(controller: Controller) -> None:
    pi = controller.agent("man-1")
    _error(pi.enroll(model="m" * (MAX_BODY_BYTES + 10)), 413, "body_too_large")


@pytest.mark.parametrize("body", ["", "garbage", "a.b.c", "{\"hostname\": \"pi\"}"])
def test_non_jws_body_refused(controller: Controller, body: str) -> None:
    _error(controller.agent("man-1").post_raw("/v1/enrollments", body), 400, "bad_jws")
    assert [r for d in controller.state.hosts() for r in d.records] == []


def test_payload_not_json_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    header = {"alg": "Ed25519", "jwk": dict(pi.key.as_dict(private=False)), "nonce": pi.nonce(),
              "url": "/v1/enrollments"}
    _error(pi.post_raw("/v1/enrollments", ed25519_compact(pi.key, header, "{not json")), 400,
           "bad_payload")


def test_unknown_fields_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    body = _error(pi.enroll(role="manager"), 400, "bad_payload")
    assert "role" in body["message"]
    assert [r for d in controller.state.hosts() for r in d.records] == []


@pytest.mark.parametrize(("fields", "code"), [
    ({"hostname": "bad_name"}, "bad_hostname"),
    ({"hardware_id": ""}, "bad_hardware_id"),
    ({"addresses": ["nope"]}, "bad_addresses"),
])
def test_bad_fields_refused(controller: Controller, fields: dict, code: str) -> None:
    _error(controller.agent("man-1").enroll(**fields), 400, code)
    assert [r for d in controller.state.hosts() for r in d.records] == []


def test_payload_must_be_an_object(controller: Controller) -> None:
    pi = controller.agent("man-1")
    _error(pi.post("/v1/enrollments", ["man-1"]), 400, "bad_payload")


def test_poll_with_payload_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    enrollment = pi.enroll().get_json()["id"]
    _error(pi.post(f"/v1/enrollments/{enrollment}/poll", {"status": "approved"}), 400,
           "bad_payload")


def test_joined_report_with_bad_node_id_refused(controller: Controller) -> None:
    pi = controller.agent("man-1")
    enrollment = pi.enroll().get_json()["id"]
    _error(pi.joined(enrollment, "not-a-node-id"), 400, "bad_node_id")


def test_unknown_route_and_method_are_json(controller: Controller) -> None:
    _error(controller.client.get("/v1/nope"), 404, "not_found")
    _error(controller.client.get("/v1/enrollments"), 405, "method_not_allowed")


def test_swarm_failure_is_json_not_a_trace(make_controller) -> None:
    swarm = FakeSwarm()
    controller = make_controller('[[rule]]\nmatch = "*"\napprove = "auto"\n', swarm)
    swarm.fail_local = SwarmError("not_a_manager", "the local Docker daemon is not a manager",
                                  503)
    _error(controller.agent("lab-1").enroll(), 503, "not_a_manager")
