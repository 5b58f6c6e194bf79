"""Lifecycle rules through the API with FakeSwarm: replacement, held duplicates, revoke,
forget, prune. The same journeys against a real swarm: tests/e2e/test_lifecycle.py."""

from __future__ import annotations

from typing import Any

from agent.wire.jws import verify_grant
from controller.keeper import DEMOTED, LABEL

from ...helpers import Controller, FakeAgent, swarm_node_id


def _join(controller: Controller, pi: FakeAgent, **fields: Any) -> str:
    """Enroll `pi` (approving it if needed), join it to the FakeSwarm; its swarm node id."""
    answer = pi.enroll(**fields).get_json()
    if answer["status"] == "pending":
        controller.admin_post(f"/v1/nodes/{answer['id']}/approve")
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, pi.hostname)
    assert pi.joined(answer["id"], node_id).get_json()["status"] == "joined"
    return node_id


def test_replacement_removes_the_stale_node_and_carries_role_and_labels(
        controller: Controller) -> None:
    old = controller.agent("mgr-1")
    old_node = _join(controller, old)
    controller.swarm.members[old_node]["Status"]["State"] = "down"
    controller.swarm.members[old_node]["Spec"]["Labels"]["by-hand"] = "yes"
    new = controller.agent("mgr-1")  # another board, another key
    request = new.enroll().get_json()
    assert (request["status"], request["role"]) == ("pending", "manager")
    record = controller.admin_get(f"/v1/nodes/{request['id']}").get_json()
    assert record["kind"] == "replacement" and old.hardware_id in record["reason"]
    approved = controller.admin_post(f"/v1/nodes/{request['id']}/approve").get_json()
    assert approved["labels"] == {"pi.model": "3b", "zone": "rack-1", "by-hand": "yes"}
    assert controller.swarm.removed == [old_node]
    grant = new.poll(request["id"]).get_json()["grant"]
    claims = verify_grant(grant, controller.ca.public_key, new.thumbprint, "mgr-1")
    assert claims.role == "manager" and claims.labels["by-hand"] == "yes"
    shown = controller.admin_get(f"/v1/nodes/{request['id']}").get_json()
    assert [p["state"] for p in shown["previous_records"]] == ["replaced"]


def test_replacement_of_a_manager_the_quorum_keeper_demoted_is_a_manager_again(
        controller: Controller) -> None:
    old = controller.agent("man-4")  # a worker by rule, made a manager by hand
    old_node = _join(controller, old)
    spec = controller.swarm.members[old_node]["Spec"]
    controller.swarm.members[old_node]["Status"]["State"] = "down"
    spec["Labels"] = {**spec["Labels"], LABEL: DEMOTED}  # lost, demoted by the keeper
    new = controller.agent("man-4")
    request = new.enroll().get_json()
    approved = controller.admin_post(f"/v1/nodes/{request['id']}/approve").get_json()
    assert approved["role"] == "manager" and LABEL not in approved["labels"]
    assert controller.swarm.removed == [old_node]


def test_replacement_of_a_live_node_is_held_and_cannot_be_approved(
        controller: Controller) -> None:
    live = _join(controller, controller.agent("man-1"))
    impostor = controller.agent("man-1")
    request = impostor.enroll().get_json()
    assert request["status"] == "pending" and "held" in request["reason"]
    refused = controller.admin_post(f"/v1/nodes/{request['id']}/approve")
    assert refused.status_code == 409 and refused.get_json()["error"] == "hostname_in_use"
    assert live in controller.swarm.members and controller.swarm.removed == []


def test_revoked_pi_is_refused_until_forgotten(controller: Controller) -> None:
    pi = controller.agent("man-2")
    node = _join(controller, pi)
    revoked = controller.admin_post("/v1/nodes/man-2/revoke", {"reason": "stolen"})
    assert revoked.status_code == 200 and revoked.get_json()["state"] == "revoked"
    assert controller.swarm.removed == [node] and controller.swarm.rotations == 1
    again = pi.enroll().get_json()
    assert (again["status"], again["reason"]) == ("revoked", "stolen") and "grant" not in again
    # Same board with a new key (re-flashed) is refused too: the hardware id is revoked.
    assert controller.agent("man-2", hardware_id=pi.hardware_id).enroll().get_json()[
        "status"] == "revoked"
    assert controller.admin_post("/v1/nodes/man-2/forget").get_json()["state"] == "forgotten"
    fresh = pi.enroll().get_json()
    assert fresh["status"] == "pending" and fresh["id"] != again["id"]


def test_revoke_and_forget_refuse_wrong_states(controller: Controller) -> None:
    pending = controller.agent("man-3").enroll().get_json()
    response = controller.admin_post(f"/v1/nodes/{pending['id']}/revoke")
    assert response.status_code == 409 and response.get_json()["error"] == "not_revocable"
    response = controller.admin_post(f"/v1/nodes/{pending['id']}/forget")
    assert response.status_code == 409 and response.get_json()["error"] == "not_forgettable"


def test_prune_removes_only_down_nodes(controller: Controller) -> None:
    down = _join(controller, controller.agent("man-4"))
    up = _join(controller, controller.agent("man-5"))
    controller.swarm.members[down]["Status"]["State"] = "down"
    listed = {r["hostname"]: r for r in controller.admin_get("/v1/nodes").get_json()["nodes"]}
    assert listed["man-4"]["swarm_state"] == "down" and listed["man-4"]["stale"] is True
    assert listed["man-5"]["stale"] is False
    bad = controller.admin_post("/v1/prune", {"older_than_seconds": -1})
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_json"
    removed = controller.admin_post("/v1/prune", {"older_than_seconds": 0}).get_json()
    assert removed == {"removed": [{"swarm_node_id": down, "hostname": "man-4"}]}
    assert up in controller.swarm.members and down not in controller.swarm.members
    states = {r["hostname"]: r["state"] for r in
              controller.admin_get("/v1/nodes").get_json()["nodes"]}
    assert states["man-4"] == "pruned" and states["man-5"] == "joined"


def test_the_listing_shows_the_role_a_joined_pi_has_in_the_swarm_now(
        controller: Controller) -> None:
    """The quorum keeper (or an admin) promotes a worker: the list says so beside the role
    it was enrolled with."""
    node_id = _join(controller, controller.agent("man-6"))
    controller.swarm.members[node_id]["Spec"]["Role"] = "manager"
    pending = controller.agent("man-7").enroll().get_json()
    listed = {r["hostname"]: r for r in controller.admin_get("/v1/nodes").get_json()["nodes"]}
    assert (listed["man-6"]["role"], listed["man-6"]["swarm_role"]) == ("worker", "manager")
    assert (listed["man-7"]["role"], listed["man-7"]["swarm_role"]) == ("worker", "")
    assert pending["status"] == "pending"
