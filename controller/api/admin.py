"""Admin endpoints: the approval queue, bootstrap tokens, the audit log. Bearer auth."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from agent.wire.errors import WireError
from controller.enrollment import JOINED, PENDING, REVOKED
from controller.store import Node, Store
from controller.swarm import SwarmError, down_for
from controller.tokens import create_bootstrap_token, digest

bp = Blueprint("admin", __name__, url_prefix="/v1")


def _store() -> Store:
    return current_app.extensions["swarm_enroll"].store


@bp.before_request
def authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    # Looked up by SHA-256: the digest, not the secret, is what a timing attack could probe.
    name = _store().admin_by_hash(digest(secret)) if scheme.lower() == "bearer" else None
    if not secret or not name:
        raise WireError("unauthorized", "admin endpoints need 'Authorization: Bearer <admin "
                        "token>' (printed once by 'enroll-controller init')", 401)
    g.actor = f"admin:{name}"


@bp.after_request
def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="swarm-enroll"'
    return response


def json_body(allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """The request's JSON object ({} when empty); 400 for anything else or unknown fields."""
    if not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise WireError("bad_json", "request body must be a JSON object")
    unknown = set(data) - allowed if allowed is not None else set()
    if unknown:
        raise WireError("bad_json", f"unknown field(s) {', '.join(sorted(unknown))} (allowed: "
                        f"{', '.join(sorted(allowed or ()))})")
    return data


def _reason(data: dict[str, Any]) -> str:
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise WireError("bad_reason", "reason must be text of at most 500 characters")
    return reason


def find_node(ref: str, prefer: str = "") -> Node:
    """A node by record id or by hostname (the newest record, or one in state `prefer`)."""
    store = _store()
    node = store.get_node(ref)
    if node is not None:
        return node
    records = store.nodes_by_hostname(ref)
    if not records:
        raise WireError("not_found", f"no node record with id or hostname {ref!r}", 404)
    preferred = [n for n in records if n.state == prefer]
    return (preferred or records)[-1]


def _seen_only(store: Store, nodes: list[Node]) -> list[dict[str, Any]]:
    """Pis announced over mDNS that never reached us: the classic 'my Pi does not show up'."""
    known = {n.thumbprint for n in nodes}
    rows = []
    for s in store.list_sightings():
        if s["agent_id"] in known:
            continue
        rows.append({
            "id": "", "hostname": s["hostname"], "state": "seen", "kind": "sighting",
            "role": s["role"], "hardware_id": s["hardware_id"], "agent_id": s["agent_id"],
            "arch": s["arch"], "addresses": s["addresses"], "swarm_node_id": "",
            "last_seen": s["last_seen"], "agent_state": s["state"],
            "reason": "announced over mDNS but never enrolled: check its pin, clock and "
                      "controller address (enroll-agent logs)",
        })
    return rows


def _swarm_view(nodes: list[Node]) -> list[dict[str, Any]]:
    """Records with their swarm node's state, plus swarm nodes no record knows (joined by
    hand, or whose record was pruned), and whether a Down node is stale."""
    state = current_app.extensions["swarm_enroll"]
    stale_after = state.config.stale_after_minutes * 60
    try:
        swarm = {a["ID"]: a for a in state.enrollment.swarm.nodes()}
    except SwarmError:  # no quorum: still show the records
        swarm = {}
    rows = []
    for node in nodes:
        attrs = swarm.pop(node.swarm_node_id, None) if node.swarm_node_id else None
        rows.append({**node.public(), **_swarm_fields(attrs, stale_after)})
    for attrs in swarm.values():
        rows.append({
            "id": "", "hostname": attrs.get("Description", {}).get("Hostname", ""),
            "state": "unmanaged", "kind": "swarm", "role": attrs["Spec"].get("Role", ""),
            "hardware_id": "", "agent_id": "", "addresses": [attrs.get("Status", {})
                                                             .get("Addr", "")],
            "swarm_node_id": attrs["ID"], "last_seen": None,
            "reason": "in the swarm without an enrollment record",
            **_swarm_fields(attrs, stale_after),
        })
    return rows


def _swarm_fields(attrs: dict[str, Any] | None, stale_after: float) -> dict[str, Any]:
    if attrs is None:
        return {"swarm_state": "", "stale": False}
    swarm_state = attrs["Status"]["State"]
    return {"swarm_state": swarm_state,
            "stale": swarm_state == "down" and down_for(attrs) >= stale_after}


@bp.get("/nodes")
def list_nodes() -> Response:
    store = _store()
    nodes = store.list_nodes()
    state = request.args.get("state", "")
    rows = _swarm_view(nodes) + _seen_only(store, nodes)
    if state == "stale":
        rows = [r for r in rows if r["stale"]]
    elif state:
        rows = [r for r in rows if r["state"] == state]
    return jsonify({"nodes": rows})


@bp.get("/nodes/<ref>")
def show_node(ref: str) -> Response:
    node = find_node(ref)
    store = _store()
    earlier = [n.public() for n in store.nodes_by_hostname(node.hostname) if n.id != node.id]
    history = store.list_audit(hostname=node.hostname, limit=1000)
    return jsonify({**node.public(), "previous_records": earlier, "history": history})


def _decide(ref: str, prefer: str, service_method: str) -> Response:
    """An admin decision on one node: approve, reject, revoke or forget, with a reason."""
    node = find_node(ref, prefer=prefer)
    service = current_app.extensions["swarm_enroll"].enrollment
    reason = _reason(json_body(frozenset({"reason"})))
    return jsonify(getattr(service, service_method)(node.id, g.actor, reason).public())


@bp.post("/nodes/<ref>/approve")
def approve(ref: str) -> Response:
    return _decide(ref, PENDING, service_method="approve")


@bp.post("/nodes/<ref>/reject")
def reject(ref: str) -> Response:
    return _decide(ref, PENDING, service_method="reject")


@bp.post("/nodes/<ref>/revoke")
def revoke(ref: str) -> Response:
    return _decide(ref, JOINED, service_method="revoke")


@bp.post("/nodes/<ref>/forget")
def forget(ref: str) -> Response:
    return _decide(ref, REVOKED, service_method="forget")


@bp.post("/nodes/prune")
def prune() -> Response:
    data = json_body(frozenset({"older_than_seconds"}))
    state = current_app.extensions["swarm_enroll"]
    older_than = data.get("older_than_seconds", state.config.stale_after_minutes * 60)
    if isinstance(older_than, bool) or not isinstance(older_than, int | float) or older_than < 0:
        raise WireError("bad_json", "older_than_seconds must be a number >= 0")
    removed = state.enrollment.prune(g.actor, float(older_than))
    return jsonify({"removed": removed})


@bp.get("/tokens")
def list_tokens() -> Response:
    return jsonify({"tokens": [t.public() for t in _store().list_tokens()]})


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    data = json_body(frozenset({"ttl_seconds", "uses", "hostname_glob", "description"}))
    secret, token = create_bootstrap_token(
        _store(), g.actor, data.get("ttl_seconds", 3600), data.get("uses", 1),
        data.get("hostname_glob", ""), data.get("description", ""),
    )
    # The only answer that ever carries the secret: it is not stored, only its hash.
    return jsonify({**token.public(), "token": secret}), 201


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    token = _store().revoke_token(token_id, g.actor)
    if token is None:
        raise WireError("not_found", f"no bootstrap token {token_id!r}", 404)
    return jsonify(token.public())


@bp.get("/audit")
def audit() -> Response:
    args = request.args
    try:
        limit = min(int(args.get("limit", 200)), 1000)
        since = float(args.get("since", 0))
    except ValueError:
        raise WireError("bad_query", "limit must be an integer and since a Unix time") from None
    rows = _store().list_audit(node_id=args.get("node", ""), hostname=args.get("hostname", ""),
                               action=args.get("action", ""),
                               actor=args.get("actor", ""), since=since, limit=limit)
    return jsonify({"events": rows})
