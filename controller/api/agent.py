"""Agent-facing endpoints: every request is a JWS signed by the agent with a fresh nonce."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from agent.wire.errors import WireError
from agent.wire.jws import SignedRequest, verify_request
from agent.wire.messages import EnrollmentRequest, JoinedReport
from controller.enrollment import Answer, EnrollmentService
from controller.nonces import NonceStore

bp = Blueprint("agent", __name__, url_prefix="/v1")


def _service() -> EnrollmentService:
    return current_app.extensions["swarm_enroll"].enrollment


def _nonces() -> NonceStore:
    return current_app.extensions["swarm_enroll"].nonces


def _signed() -> SignedRequest:
    signed = verify_request(request.get_data(cache=False), request.path)
    if not _nonces().spend(signed.nonce):
        raise WireError("bad_nonce", "nonce unknown, expired or already used; fetch a new one "
                        "from GET /v1/nonce")
    return signed


def _reply(answer: Answer) -> tuple[Response, int]:
    """The answer, and where every controller serves: an agent fails over to those."""
    return (jsonify({**answer.to_json(), "controllers": _service().controller_urls()}),
            answer.http_status)


@bp.after_request
def fresh_nonce(response: Response) -> Response:
    """Like ACME's Replay-Nonce: every answer carries the nonce for the next request."""
    response.headers["Replay-Nonce"] = _nonces().issue()
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/nonce", methods=["GET", "HEAD"])
def nonce() -> tuple[str, int]:
    return "", 204


@bp.post("/enrollments")
def enroll() -> tuple[Response, int]:
    signed = _signed()
    req = EnrollmentRequest.from_json(signed.payload)
    return _reply(_service().enroll(signed, req, request.remote_addr or ""))


@bp.post("/enrollments/<node_id>/poll")
def poll(node_id: str) -> tuple[Response, int]:
    signed = _signed()
    if signed.payload not in ({}, None):
        raise WireError("bad_payload", "poll takes an empty JSON object as payload")
    return _reply(_service().poll(signed, node_id))


@bp.post("/enrollments/<node_id>/joined")
def joined(node_id: str) -> tuple[Response, int]:
    signed = _signed()
    return _reply(_service().joined(signed, node_id, JoinedReport.from_json(signed.payload)))
