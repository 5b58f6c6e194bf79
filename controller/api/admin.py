"""Admin endpoints: the approval queue, bootstrap tokens, the audit log. Bearer auth.

A decision names exactly one record: by its id, or by hostname when only one claim of
that name is open (else 409 `ambiguous`, listing the claimants by key fingerprint,
hardware id and source address), optionally pinned to a key with `fingerprint`.
Lists are paged (`limit`, and the `next` cursor of the previous page).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from agent.wire.errors import WireError
from agent.wire.keys import normalize_fingerprint
from controller.state import (
    APPROVED,
    JOINED,
    NODE_FILTERS,
    OPEN,
    PENDING,
    REJECTED,
    REVOKED,
    Record,
    State,
    Token,
)
from controller.swarm import SwarmError, down_for
from controller.tokens import create_bootstrap_token, digest

bp = Blueprint("admin", __name__, url_prefix="/v1")

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
MIN_FINGERPRINT = 8  # hex digits a fingerprint given by hand must have


def state_of_app() -> State:
    return current_app.extensions["swarm_enroll"].state


_state = state_of_app


@bp.before_request
def authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    # Looked up by SHA-256: the digest, not the secret, is what a timing attack could probe.
    name = _state().admin_by_hash(digest(secret)) if scheme.lower() == "bearer" else None
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
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested too deep for the parser
        data = None
    if not isinstance(data, dict):
        raise WireError("bad_json", "request body must be a JSON object")
    unknown = set(data) - allowed if allowed is not None else set()
    if unknown:
        raise WireError("bad_json", f"unknown field(s) {', '.join(sorted(unknown))} (allowed: "
                        f"{', '.join(sorted(allowed or ()))})")
    return data


def _text_field(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise WireError(f"bad_{key}", f"{key} must be text of at most {limit} characters")
    return value


def query(*allowed: str) -> dict[str, str]:
    """The query string, refusing names this endpoint does not know (a typo such as
    ?stat=pending would otherwise list everything without a word)."""
    unknown = set(request.args) - set(allowed)
    if unknown:
        raise WireError("bad_query", f"unknown query parameter(s) "
                        f"{', '.join(sorted(repr(u)[:40] for u in unknown))} (allowed: "
                        f"{', '.join(allowed) or 'none'})")
    return dict(request.args)


def page_limit() -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise WireError("bad_query", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def claimant(record: Record) -> dict[str, Any]:
    """Who a claim is, for an admin to tell claimants apart."""
    state = _state()
    return {"id": record.id, "hostname": record.hostname, "state": record.state,
            "kind": record.kind, "fingerprint": record.fingerprint,
            "hardware_id": record.hardware_id, "source": record.source,
            "first_seen": record.created_at, "last_seen": state.last_seen(record)}


def choose(ref: str, fingerprint: str, states: tuple[str, ...]) -> Record:
    """The one record an admin decision is about.

    By record id; or by hostname, where the open claims of the name and the records this
    decision applies to (`states`) must be one record, else it is ambiguous. With
    `fingerprint` (the key's, or a unique prefix of it), the record must have that key.
    """
    state = _state()
    wanted = normalize_fingerprint(fingerprint) if fingerprint else ""
    if fingerprint and len(wanted) < MIN_FINGERPRINT:
        raise WireError("bad_fingerprint", "fingerprint must be at least 8 hex digits of the "
                        "key fingerprint shown by 'enrollctl nodes' and 'enroll-agent id'")

    def has_key(record: Record) -> bool:
        return normalize_fingerprint(record.fingerprint).startswith(wanted)

    record = state.record(ref)
    if record is not None:
        if wanted and not has_key(record):
            raise WireError("fingerprint_mismatch", f"record {ref} has key fingerprint "
                            f"{record.fingerprint}, not {fingerprint}", 409)
        return record
    doc = state.host(ref)
    if not doc.records:
        raise WireError("not_found", f"no node record with id or hostname {ref!r}", 404)
    relevant = [r for r in doc.records if r.state in OPEN or r.state in states]
    if wanted:
        relevant = [r for r in relevant if has_key(r)]
        if not relevant:
            raise WireError("not_found", f"no claim of {doc.hostname} has key fingerprint "
                            f"{fingerprint}", 404)
    if len(relevant) > 1:
        shown = ", ".join(f"{r.id} ({r.state}, key {r.fingerprint}, hardware "
                          f"{r.hardware_id}, from {r.source or '?'})" for r in relevant)
        raise WireError("ambiguous", f"{doc.hostname} has {len(relevant)} claims: {shown}. "
                        "Say which one: its record id, or --fingerprint with the key "
                        "fingerprint the Pi shows ('enroll-agent id', firstboot.log).", 409,
                        {"claimants": [claimant(r) for r in relevant]})
    # no record of the name fits: the newest, so that the decision says why not
    return relevant[0] if relevant else doc.records[-1]


def _seen_only(records: list[Record]) -> list[dict[str, Any]]:
    """Pis announced over mDNS that never reached us: the classic 'my Pi does not show up'."""
    known = {r.thumbprint for r in records}
    sightings = current_app.extensions["swarm_enroll"].sightings
    return [{
        "id": "", "hostname": s.hostname, "state": "seen", "kind": "sighting",
        "role": s.role, "hardware_id": s.hardware_id, "agent_id": s.agent_id,
        "arch": s.arch, "addresses": s.addresses, "swarm_node_id": "", "source": "",
        "first_seen": s.first_seen, "last_seen": s.last_seen, "agent_state": s.state,
        "reason": "announced over mDNS but never enrolled: check its pin, clock and "
                  "controller address (enroll-agent logs)",
    } for s in sightings.list() if s.agent_id not in known]


def _swarm_view(records: list[Record]) -> list[dict[str, Any]]:
    """Records with their swarm node's state, plus swarm nodes no record knows (joined by
    hand, or whose record was pruned), and whether a Down node is stale."""
    app_state = current_app.extensions["swarm_enroll"]
    stale_after = app_state.config.stale_after_minutes * 60
    try:
        swarm = {a["ID"]: a for a in app_state.enrollment.swarm.nodes()}
    except SwarmError:  # no quorum, or the daemon does not answer: still show the records
        swarm = {}
    rows = []
    for record in records:
        attrs = swarm.pop(record.swarm_node_id, None) if record.swarm_node_id else None
        rows.append({**record.public(), "last_seen": app_state.state.last_seen(record),
                     **_swarm_fields(attrs, stale_after)})
    for attrs in swarm.values():
        rows.append({
            "id": "", "hostname": attrs.get("Description", {}).get("Hostname", ""),
            "state": "unmanaged", "kind": "swarm", "role": attrs["Spec"].get("Role", ""),
            "hardware_id": "", "agent_id": "", "source": "",
            "addresses": [attrs.get("Status", {}).get("Addr", "")],
            "swarm_node_id": attrs["ID"], "last_seen": None,
            "reason": "in the swarm without an enrollment record",
            **_swarm_fields(attrs, stale_after),
        })
    return rows


def _swarm_fields(attrs: dict[str, Any] | None, stale_after: float) -> dict[str, Any]:
    """A swarm node's state, and its role there, which may no longer be the role it was
    enrolled with (`role`): the quorum keeper or an admin may have promoted or demoted it."""
    if attrs is None:
        return {"swarm_state": "", "swarm_role": "", "stale": False}
    swarm_state = attrs["Status"]["State"]
    return {"swarm_state": swarm_state, "swarm_role": attrs["Spec"].get("Role", ""),
            "stale": swarm_state == "down" and down_for(attrs) >= stale_after}


def _order(row: dict[str, Any]) -> str:
    """The listing's order, which is also its cursor: hostname, then the row's identity."""
    return f"{row['hostname'].lower()}\0{row['id'] or row.get('swarm_node_id') or ''}" \
           f"\0{row.get('agent_id', '')}"


@bp.get("/nodes")
def list_nodes() -> Response:
    query("state", "limit", "after")
    limit = page_limit()
    after = request.args.get("after", "")
    wanted = request.args.get("state", "")
    if wanted and wanted not in NODE_FILTERS:  # a typo would hide the queue without a word
        raise WireError("bad_query", f"unknown state {wanted[:40]!r} (one of: "
                        f"{', '.join(NODE_FILTERS)})")
    records = [r for doc in _state().hosts() for r in doc.records]
    rows = _swarm_view(records) + _seen_only(records)
    if wanted == "stale":
        rows = [r for r in rows if r["stale"]]
    elif wanted:
        rows = [r for r in rows if r["state"] == wanted]
    rows.sort(key=_order)
    rows = [r for r in rows if _order(r) > after] if after else rows
    page = rows[:limit]
    return jsonify({"nodes": page,
                    "next": _order(page[-1]) if len(rows) > limit else None})


@bp.get("/nodes/<ref>")
def show_node(ref: str) -> Response:
    query("fingerprint")
    record = choose(ref, request.args.get("fingerprint", ""), (PENDING, APPROVED, JOINED))
    state = _state()
    earlier = [{**r.public(), "last_seen": state.last_seen(r)}
               for r in state.host(record.hostname).records if r.id != record.id]
    history = [e.to_json() for e in state.events(hostname=record.hostname, limit=MAX_LIMIT)]
    return jsonify({**record.public(), "last_seen": state.last_seen(record),
                    "previous_records": earlier, "history": history})


def _decide(ref: str, states: tuple[str, ...], service_method: str) -> Response:
    """An admin decision on one record: approve, reject, revoke or forget, with a reason."""
    data = json_body(frozenset({"reason", "fingerprint"}))
    reason = _text_field(data, "reason", 500)
    record = choose(ref, _text_field(data, "fingerprint", 100), states)
    service = current_app.extensions["swarm_enroll"].enrollment
    return jsonify(getattr(service, service_method)(record.id, g.actor, reason).public())


@bp.post("/nodes/<ref>/approve")
def approve(ref: str) -> Response:
    return _decide(ref, (PENDING,), service_method="approve")


@bp.post("/nodes/<ref>/reject")
def reject(ref: str) -> Response:
    return _decide(ref, (PENDING, APPROVED), service_method="reject")


@bp.post("/nodes/<ref>/revoke")
def revoke(ref: str) -> Response:
    return _decide(ref, (APPROVED, JOINED), service_method="revoke")


@bp.post("/nodes/<ref>/forget")
def forget(ref: str) -> Response:
    return _decide(ref, (REVOKED, REJECTED), service_method="forget")


@bp.post("/prune")  # not under /nodes/: a Pi may well be called "prune"
def prune() -> Response:
    data = json_body(frozenset({"older_than_seconds"}))
    app_state = current_app.extensions["swarm_enroll"]
    older_than = data.get("older_than_seconds", app_state.config.stale_after_minutes * 60)
    if isinstance(older_than, bool) or not isinstance(older_than, int | float) or older_than < 0:
        raise WireError("bad_json", "older_than_seconds must be a number >= 0")
    removed = app_state.enrollment.prune(g.actor, float(older_than))
    return jsonify({"removed": removed})


@bp.get("/tokens")
def list_tokens() -> Response:
    query("limit", "after")
    limit = page_limit()
    after = request.args.get("after", "")
    tokens = [t for t in _state().tokens() if not after or t.id > after]
    tokens.sort(key=lambda t: t.id)
    page = tokens[:limit]
    return jsonify({"tokens": [t.public() for t in page],
                    "next": page[-1].id if len(tokens) > limit else None})


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    data = json_body(frozenset({"ttl_seconds", "uses", "hostname_glob", "description"}))
    secret, token = create_bootstrap_token(
        _state(), g.actor, data.get("ttl_seconds", 3600), data.get("uses", 1),
        data.get("hostname_glob", ""), data.get("description", ""),
    )
    # The only answer that ever carries the secret: it is not stored, only its hash.
    return jsonify({**token.public(), "token": secret}), 201


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str) -> Response:
    def revoke(token: Token) -> Token:
        if token.revoked_at is None:
            token.revoked_at = time.time()
            token.log(g.actor, "token.revoke")
        return token

    return jsonify(_state().update_token(token_id, revoke).public())


@bp.get("/audit")
def audit() -> Response:
    args = query("node", "hostname", "action", "actor", "since", "limit", "before")
    limit = page_limit()
    try:
        since = float(args.get("since", 0))
    except ValueError:
        raise WireError("bad_query", "since must be a Unix time") from None
    events = _state().events(node_id=args.get("node", ""), hostname=args.get("hostname", ""),
                             action=args.get("action", ""), actor=args.get("actor", ""),
                             since=since, before=args.get("before", ""), limit=limit + 1)
    page = events[:limit]
    return jsonify({"events": [e.to_json() for e in page],
                    "next": page[-1].id if len(events) > limit else None})
