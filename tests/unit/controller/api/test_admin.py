"""The admin API: bearer auth on every route, the approval queue, tokens, the audit log."""

from __future__ import annotations

import re

import pytest

from controller.tokens import digest

from ...helpers import Controller


def _admin_routes(controller: Controller) -> list[tuple[str, str]]:
    routes = []
    for rule in controller.app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin."):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "x", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def test_admin_routes_found(controller: Controller) -> None:
    routes = _admin_routes(controller)
    assert ("GET", "/v1/nodes") in routes and ("POST", "/v1/nodes/x/approve") in routes
    assert ("POST", "/v1/tokens") in routes and ("DELETE", "/v1/tokens/x") in routes
    assert ("GET", "/v1/audit") in routes


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer sea_wrong-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Bearer ",
    "Bearer",
    "Basic {secret}",  # the right secret under the wrong scheme
    "{secret}",
    "Bearer {digest}",  # the stored hash is not a credential
], ids=["none", "wrong", "empty", "scheme-only", "basic", "no-scheme", "digest"])
def test_every_admin_route_needs_the_admin_token(controller: Controller,
                                                 authorization: str | None) -> None:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            secret=controller.admin_secret, digest=digest(controller.admin_secret))
    for method, path in _admin_routes(controller):
        response = controller.client.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.is_json, (method, path)
        assert response.get_json()["error"] == "unauthorized"
        assert set(response.get_json()) == {"error", "message"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert controller.state.tokens() == []


def test_admin_token_opens_admin_routes(controller: Controller) -> None:
    response = controller.admin_get("/v1/nodes")
    # No records yet: only the controller's own swarm node, which no agent enrolled yet.
    assert response.status_code == 200
    (only,) = response.get_json()["nodes"]
    assert only["state"] == "unmanaged" and only["hostname"] == "ctl-1"
    assert response.headers["Cache-Control"] == "no-store"
    lowercase = controller.client.get(
        "/v1/nodes", headers={"Authorization": f"bearer {controller.admin_secret}"})
    assert lowercase.status_code == 200


def test_admin_actions_are_attributed(controller: Controller) -> None:
    created = controller.create_token(description="rack 2")
    row = controller.admin_get("/v1/audit", query_string={"action": "token.create"}).get_json()
    assert row["events"][0]["actor"] == "admin:alice"
    assert row["events"][0]["detail"]["token_id"] == created["id"]


def test_create_list_revoke_token(controller: Controller) -> None:
    response = controller.admin_post("/v1/tokens", {"ttl_seconds": 600, "uses": 3,
                                                    "hostname_glob": "pi-*",
                                                    "description": "rack 2"})
    assert response.status_code == 201
    created = response.get_json()
    assert created["token"].startswith("seb_")
    assert (created["uses_left"], created["hostname_glob"]) == (3, "pi-*")
    assert created["expires_at"] - created["created_at"] == 600
    listed = controller.admin_get("/v1/tokens").get_json()["tokens"]
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and "hash" not in listed[0]
    revoked = controller.client.delete(f"/v1/tokens/{created['id']}", headers=controller.admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    # A revoked token no longer approves anyone.
    assert controller.agent("tok-1").enroll(bootstrap_token=created["token"]).status_code == 202


def test_revoke_unknown_token_is_404(controller: Controller) -> None:
    response = controller.client.delete("/v1/tokens/tok_nope", headers=controller.admin)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize(("body", "code"), [
    ({"ttl_seconds": 0}, "bad_ttl"),
    ({"uses": -1}, "bad_uses"),
    ({"uses": "many"}, "bad_uses"),
    ({"ttl": 60}, "bad_json"),
    ({"ttl_seconds": True}, "bad_ttl"),
])
def test_create_token_bad_input(controller: Controller, body: dict, code: str) -> None:
    response = controller.admin_post("/v1/tokens", body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == code
    assert controller.state.tokens() == []


@pytest.mark.parametrize("raw", ["{", "[1, 2]", "\"text\"", "null"])
def test_bad_json_body_is_400(controller: Controller, raw: str) -> None:
    response = controller.client.post("/v1/tokens", data=raw, content_type="application/json",
                                      headers=controller.admin)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_json" and response.get_json()["message"]
    assert controller.state.tokens() == []


def test_approve_unknown_node_is_404(controller: Controller) -> None:
    response = controller.admin_post("/v1/nodes/enr_nope/approve")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def rejected(controller: Controller, hostname: str = "man-2") -> str:
    enrollment = controller.agent(hostname).enroll().get_json()["id"]
    assert controller.admin_post(f"/v1/nodes/{enrollment}/reject").status_code == 200
    return enrollment


def test_approve_rejected_node_is_409(controller: Controller) -> None:
    enrollment = rejected(controller)
    response = controller.admin_post(f"/v1/nodes/{enrollment}/approve")
    assert response.status_code == 409 and response.get_json()["error"] == "not_pending"


def test_reason_too_long_is_400(controller: Controller) -> None:
    enrollment = controller.agent("man-1").enroll().get_json()["id"]
    response = controller.admin_post(f"/v1/nodes/{enrollment}/approve", {"reason": "r" * 501})
    assert response.status_code == 400 and response.get_json()["error"] == "bad_reason"
    assert controller.admin_get(f"/v1/nodes/{enrollment}").get_json()["state"] == "pending"


def test_nodes_state_filter_and_show(controller: Controller) -> None:
    pending = controller.agent("man-1").enroll().get_json()["id"]
    refused = rejected(controller)
    rows = controller.admin_get("/v1/nodes", query_string={"state": "pending"}).get_json()
    assert [n["id"] for n in rows["nodes"]] == [pending]
    shown = controller.admin_get("/v1/nodes/man-2").get_json()
    assert shown["id"] == refused and shown["state"] == "rejected"
    assert [h["action"] for h in shown["history"]] == ["node.reject", "node.request"]
    assert "public_jwk" not in shown
    assert controller.admin_get("/v1/nodes/nobody").status_code == 404
    typo = controller.admin_get("/v1/nodes", query_string={"state": "pendng"})
    assert typo.status_code == 400 and typo.get_json()["error"] == "bad_query"
    assert "unknown state 'pendng' (one of: pending, approved" in typo.get_json()["message"]


def test_sighting_only_pis_are_listed_as_seen(controller: Controller) -> None:
    sightings = controller.app.extensions["swarm_enroll"].sightings
    sightings.record("pi-lost", "agentid", "hw9", "new", "", "armv6l", ["10.0.0.50"])
    rows = controller.admin_get("/v1/nodes", query_string={"state": "seen"}).get_json()["nodes"]
    assert [(r["hostname"], r["state"], r["kind"]) for r in rows] == [
        ("pi-lost", "seen", "sighting")]


def test_audit_filters_and_bad_query(controller: Controller) -> None:
    controller.agent("man-1").enroll()
    rejected(controller)
    events = controller.admin_get("/v1/audit", query_string={"hostname": "MAN-2"}).get_json()
    assert [e["action"] for e in events["events"]] == ["node.reject", "node.request"]
    limited = controller.admin_get("/v1/audit", query_string={"limit": "1"}).get_json()
    assert len(limited["events"]) == 1
    bad = controller.admin_get("/v1/audit", query_string={"limit": "many"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_query"
