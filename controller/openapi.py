"""The API description served at /v1/openapi.json; a test keeps it equal to the routes."""

from __future__ import annotations

from typing import Any

from agent import __version__

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_JOSE = {"required": True, "content": {"application/jose": {"schema": {
    "type": "string", "description": "compact JWS signed by the agent key (alg Ed25519) "
    "with protected header {jwk, nonce, url}"}}}}
_ADMIN = [{"bearer": []}]


def _op(summary: str, admin: bool = False, body: dict[str, Any] | None = None,
        ok: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {ok: {"description": "success"},
                                                            "4XX": _ERROR}}
    if admin:
        op["security"] = _ADMIN
    if body:
        op["requestBody"] = body
    return op


def _json_body(props: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"type": "object",
                                                         "properties": props}}}}


_REASON = _json_body({"reason": {"type": "string", "maxLength": 500}})

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("Liveness, version, CA pin and the swarm's short id")},
    "/v1/ca": {"get": _op("The enrollment CA certificate (PEM); check it against your pin")},
    "/v1/openapi.json": {"get": _op("This document")},
    "/v1/nonce": {"get": _op("A fresh single-use nonce in the Replay-Nonce header", ok="204"),
                  "head": _op("Same as GET", ok="204")},
    "/v1/enrollments": {"post": _op("Ask to enroll (signed); 202 pending, 200 with a grant",
                                    body=_JOSE)},
    "/v1/enrollments/{node_id}/poll": {"post": _op("Status of an enrollment (signed)",
                                                   body=_JOSE)},
    "/v1/enrollments/{node_id}/joined": {"post": _op(
        "Report the swarm NodeID after joining (signed); the controller confirms it, applies "
        "labels and availability and promotes managers", body=_JOSE)},
    "/v1/nodes": {"get": _op("Node records with their swarm state, swarm nodes without a "
                             "record, and Pis only seen over mDNS (?state=, incl. stale)",
                             admin=True)},
    "/v1/nodes/{ref}": {"get": _op("One node by id or hostname, with its history", admin=True)},
    "/v1/nodes/{ref}/approve": {"post": _op("Approve a pending request", True, _REASON)},
    "/v1/nodes/{ref}/reject": {"post": _op("Reject a pending or approved request", True,
                                           _REASON)},
    "/v1/nodes/{ref}/revoke": {"post": _op(
        "Revoke: drain, wait for tasks to move, remove from the swarm, rotate the worker "
        "token; the agent is told and leaves", True, _REASON)},
    "/v1/nodes/{ref}/forget": {"post": _op(
        "Forget a revoked or rejected record so that Pi may ask again (history kept)", True,
        _REASON)},
    "/v1/nodes/prune": {"post": _op(
        "Remove swarm nodes Down for longer than older_than_seconds (default: the config's "
        "stale_after_minutes); never a Ready node or the last manager", True,
        _json_body({"older_than_seconds": {"type": "number", "minimum": 0}}))},
    "/v1/tokens": {
        "get": _op("Bootstrap tokens (never their secrets)", admin=True),
        "post": _op("Create a bootstrap token; the secret is in this answer only", True,
                    _json_body({"ttl_seconds": {"type": "integer"}, "uses": {"type": "integer"},
                                "hostname_glob": {"type": "string"},
                                "description": {"type": "string"}}), ok="201"),
    },
    "/v1/tokens/{token_id}": {"delete": _op("Revoke a bootstrap token", admin=True)},
    "/v1/audit": {"get": _op("Audit log (?node=&hostname=&action=&actor=&since=&limit=)",
                             admin=True)},
    "/v1/baseline": {"get": _op(
        "Baseline services: per service desired vs running tasks, the nodes it runs on, "
        "drift, the last reconcile's result and error", admin=True)},
    "/v1/baseline/apply": {"post": _op(
        "Reconcile the baseline now: create missing services, update drifted ones, rescale; "
        "per-service results (created, updated, unchanged, removed, error). Optional body: "
        "the new file's text (validated, then stored) and force (retry a rolled-back "
        "update); 422 baseline_invalid names the service and key and changes nothing",
        True, _json_body({"file": {"type": "string"}, "force": {"type": "boolean"}}))},
    "/v1/cluster": {"get": _op(
        "Cluster health: managers and workers by state and availability, the leader, tasks "
        "per service, Raft fault tolerance in words", admin=True)},
}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "swarm-enroll controller", "version": __version__},
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "message"],
                                  "properties": {"error": {"type": "string"},
                                                 "message": {"type": "string"}}}},
        },
    }
