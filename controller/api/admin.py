"""Admin endpoints: the approval queue, bootstrap tokens, the audit log. Bearer auth."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from agent.wire.errors import WireError
from controller.enrollment import PENDING
from controller.store import Node, Store
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


def _body() -> dict[str, Any]:
    if not request.get_data():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise WireError("bad_json", "request body must be a JSON object")
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


@bp.get("/nodes")
def list_nodes() -> Response:
    store = _store()
    nodes = store.list_nodes()
    state = request.args.get("state", "")
    rows = [n.public() for n in nodes] + _seen_only(store, nodes)
    if state:
        rows = [r for r in rows if r["state"] == state]
    return jsonify({"nodes": rows})


@bp.get("/nodes/<ref>")
def show_node(ref: str) -> Response:
    node = find_node(ref)
    history = _store().list_audit(node_id=node.id)
    return jsonify({**node.public(), "history": history})


@bp.post("/nodes/<ref>/approve")
def approve(ref: str) -> Response:
    node = find_node(ref, prefer=PENDING)
    service = current_app.extensions["swarm_enroll"].enrollment
    return jsonify(service.approve(node.id, g.actor, _reason(_body())).public())


@bp.post("/nodes/<ref>/reject")
def reject(ref: str) -> Response:
    node = find_node(ref, prefer=PENDING)
    service = current_app.extensions["swarm_enroll"].enrollment
    return jsonify(service.reject(node.id, g.actor, _reason(_body())).public())


@bp.get("/tokens")
def list_tokens() -> Response:
    return jsonify({"tokens": [t.public() for t in _store().list_tokens()]})


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    data = _body()
    unknown = set(data) - {"ttl_seconds", "uses", "hostname_glob", "description"}
    if unknown:
        raise WireError("bad_json", f"unknown field(s) {', '.join(sorted(unknown))}")
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
