"""The API description served at /v1/openapi.json; tests keep it equal to the routes and
check every answer against it (schemathesis, with and without the admin token)."""

from __future__ import annotations

from typing import Any

from agent import __version__
from controller.hostglob import HOSTNAME_GLOB
from controller.state import NODE_FILTERS
from controller.tokens import MAX_TTL, MAX_USES

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: dict[str, Any] | None = None,
            media: str = _JSON) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


_ERROR = _answer("error: {error, message}, and for some errors more fields", _ref("Error"))
_JOSE = {"required": True, "content": {"application/jose": {"schema": {
    "type": "string", "description": "compact JWS signed by the agent key (alg Ed25519) "
    "with protected header {jwk, nonce, url}"}}}}
_ADMIN = [{"bearer": []}]


def _param(name: str, where: str = "query", description: str = "",
           schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path",
            "description": description, "schema": schema or {"type": "string"}}


_LIMIT = _param("limit", description="page size, 1-1000 (default 200)",
                schema={"type": "integer", "minimum": 1, "maximum": 1000})


def _op(summary: str, answer: dict[str, Any], admin: bool = False,
        body: dict[str, Any] | None = None, ok: str = "200",
        params: list[dict[str, Any]] | None = None, errors: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: answer, "4XX": _ERROR,
                                                            **(errors or {})}}
    if admin:
        op["security"] = _ADMIN
    if body:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _json_body(props: dict[str, Any]) -> dict[str, Any]:
    return {"content": {_JSON: {"schema": {"type": "object", "properties": props,
                                           "additionalProperties": False}}}}


def _list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "required": [key, "next"], "properties": {
        key: {"type": "array", "items": _ref(item)},
        "next": {"type": ["string", "null"], "description": "cursor of the next page"}}}


_REF = _param("ref", "path", "record id, or hostname (when only one Pi claims it)")
# The agent key's fingerprint as people type it: 8 or more hex digits, any dashes or colons.
_FINGERPRINT = {"type": "string", "maxLength": 100,
                "pattern": "^[-: ]*([0-9A-Fa-f][-: ]*){8,}$",
                "description": "the agent key fingerprint the decision is for ('enroll-agent "
                               "id'), or a unique prefix of 8+ hex digits"}
_DECISION = _json_body({"reason": {"type": "string", "maxLength": 500},
                        "fingerprint": _FINGERPRINT})
_AGENT_ANSWER = _answer("the enrollment's state, and a grant once approved", _ref("Enrollment"))
_BUSY = {"503": _answer("the swarm or the shared state cannot be used now", _ref("Error"))}
_OBJECT = {"type": "object"}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("Liveness, version, CA pin and the swarm's short id",
                            _answer("ok", _OBJECT))},
    "/v1/ca": {"get": _op("The enrollment CA certificate (PEM); check it against your pin",
                          _answer("PEM", {"type": "string"}, "application/x-pem-file"))},
    "/v1/openapi.json": {"get": _op("This document", _answer("OpenAPI 3.1", _OBJECT))},
    "/v1/nonce": {"get": _op("A fresh single-use nonce in the Replay-Nonce header",
                             _answer("nonce in Replay-Nonce"), ok="204"),
                  "head": _op("Same as GET", _answer("nonce in Replay-Nonce"), ok="204")},
    "/v1/enrollments": {"post": _op(
        "Ask to enroll (signed); 202 pending, 200 with a grant; 429 with Retry-After when "
        "too many requests wait for approval", _AGENT_ANSWER, body=_JOSE,
        errors={"202": _AGENT_ANSWER, **_BUSY})},
    "/v1/enrollments/{node_id}/poll": {"post": _op(
        "Status of an enrollment (signed)", _AGENT_ANSWER, body=_JOSE,
        params=[_param("node_id", "path")], errors={"202": _AGENT_ANSWER, **_BUSY})},
    "/v1/enrollments/{node_id}/joined": {"post": _op(
        "Report the swarm NodeID after joining (signed); the controller confirms it, applies "
        "labels and availability and promotes managers", _AGENT_ANSWER, body=_JOSE,
        params=[_param("node_id", "path")], errors=_BUSY)},
    "/v1/nodes": {"get": _op(
        "Node records with their swarm state, swarm nodes without a record, and Pis only "
        "seen over mDNS, by hostname; paged", _answer("a page", _list("nodes", "Node")),
        admin=True, params=[_param("state", description="only the nodes in this state",
                                   schema={"type": "string", "enum": list(NODE_FILTERS)}), _LIMIT,
                            _param("after", description="the previous page's next")])},
    "/v1/nodes/{ref}": {"get": _op(
        "One record with its earlier records and history",
        _answer("the record", _ref("Node")), admin=True,
        params=[_REF, _param("fingerprint", schema=_FINGERPRINT)])},
    "/v1/nodes/{ref}/approve": {"post": _op(
        "Approve a pending request; 409 ambiguous (with the claimants) when the hostname has "
        "more than one claim", _answer("the record", _ref("Node")), True, _DECISION,
        params=[_REF], errors=_BUSY)},
    "/v1/nodes/{ref}/reject": {"post": _op(
        "Reject a pending or approved request", _answer("the record", _ref("Node")), True,
        _DECISION, params=[_REF], errors=_BUSY)},
    "/v1/nodes/{ref}/revoke": {"post": _op(
        "Revoke: drain, wait for tasks to move, remove from the swarm, rotate the worker "
        "token; the agent is told and leaves", _answer("the record", _ref("Node")), True,
        _DECISION, params=[_REF], errors=_BUSY)},
    "/v1/nodes/{ref}/forget": {"post": _op(
        "Forget a revoked or rejected record so that Pi may ask again (history kept)",
        _answer("the record", _ref("Node")), True, _DECISION, params=[_REF], errors=_BUSY)},
    "/v1/prune": {"post": _op(
        "Remove swarm nodes Down for longer than older_than_seconds (default: the config's "
        "stale_after_minutes); never a Ready node or the last manager",
        _answer("what was removed", _OBJECT), True,
        _json_body({"older_than_seconds": {"type": "number", "minimum": 0}}), errors=_BUSY)},
    "/v1/tokens": {
        "get": _op("Bootstrap tokens (never their secrets); paged",
                   _answer("a page", _list("tokens", "Token")), admin=True,
                   params=[_LIMIT, _param("after", description="the previous page's next")]),
        "post": _op("Create a bootstrap token; the secret is in this answer only",
                    _answer("the token, with its secret", _ref("Token")), True,
                    _json_body({"ttl_seconds": {"type": "integer", "minimum": 1,
                                                "maximum": MAX_TTL},
                                "uses": {"type": "integer", "minimum": 1, "maximum": MAX_USES},
                                "hostname_glob": {"type": "string", "maxLength": 253,
                                                  "pattern": f"^{HOSTNAME_GLOB}$"},
                                "description": {"type": "string", "maxLength": 200}}),
                    ok="201",
                    errors=_BUSY),
    },
    "/v1/tokens/{token_id}": {"delete": _op(
        "Revoke a bootstrap token", _answer("the token", _ref("Token")), admin=True,
        params=[_param("token_id", "path")], errors=_BUSY)},
    "/v1/audit": {"get": _op(
        "Audit log, newest first; repeated refusals are one event with a count; paged",
        _answer("a page", _list("events", "Event")), admin=True,
        params=[_param("node"), _param("hostname"), _param("action"), _param("actor"),
                _param("since", schema={"type": "number"}), _LIMIT,
                _param("before", description="the previous page's next")])},
    "/v1/baseline": {"get": _op(
        "Baseline services: per service desired vs running tasks, the nodes it runs on, "
        "drift, stuck tasks, the last reconcile's result and error",
        _answer("status", _OBJECT), admin=True, errors=_BUSY)},
    "/v1/baseline/apply": {"post": _op(
        "Reconcile the baseline now: create missing services, update drifted ones; "
        "per-service results (created, updated, unchanged, removed, error). Optional body: "
        "the new file's text (validated, then stored) and force (retry a rolled-back "
        "update); 422 baseline_invalid names the service and key and changes nothing",
        _answer("the report", _OBJECT), True,
        _json_body({"file": {"type": "string"}, "force": {"type": "boolean"}}),
        errors=_BUSY)},
    "/v1/cluster": {"get": _op(
        "Cluster health: managers and workers by state and availability, the leader, tasks "
        "per service, Raft fault tolerance in words, and the quorum keeper (keeper: enabled, "
        "its settings, its last action and why, what it waits for)",
        _answer("health", _OBJECT), admin=True,
        errors=_BUSY)},
}

_STRING = {"type": "string"}
_TIME = {"type": ["number", "null"]}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": _STRING, "message": _STRING,
        "claimants": {"type": "array", "items": _OBJECT}}},
    "Enrollment": {"type": "object", "required": ["id", "status", "role"], "properties": {
        "id": _STRING, "status": _STRING, "role": _STRING, "reason": _STRING,
        "grant": _STRING}},
    "Node": {"type": "object", "required": ["id", "hostname", "state"], "properties": {
        "id": _STRING, "hostname": _STRING, "state": _STRING, "kind": _STRING,
        "role": _STRING, "fingerprint": _STRING, "hardware_id": _STRING, "source": _STRING,
        "first_seen": _TIME, "last_seen": _TIME, "agent_id": _STRING,
        "swarm_state": _STRING, "swarm_role": _STRING}},
    "Token": {"type": "object", "required": ["id", "uses_left", "expires_at"], "properties": {
        "id": _STRING, "description": _STRING, "hostname_glob": _STRING,
        "uses_total": {"type": "integer"}, "uses_left": {"type": "integer"},
        "expires_at": {"type": "number"}, "revoked_at": _TIME, "token": _STRING}},
    "Event": {"type": "object", "required": ["id", "at", "actor", "action", "count"],
              "properties": {"id": _STRING, "at": {"type": "number"}, "actor": _STRING,
                             "action": _STRING, "node_id": _STRING, "hostname": _STRING,
                             "reason": _STRING, "detail": _OBJECT,
                             "count": {"type": "integer", "minimum": 1},
                             "last_at": {"type": "number"}}},
}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "swarm-enroll controller", "version": __version__},
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
