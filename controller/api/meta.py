"""Unauthenticated endpoints: health, the CA certificate, the API description."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from controller.openapi import spec

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    state = current_app.extensions["swarm_enroll"]
    body = {"status": "ok", "version": state.version, "ca": state.pin}
    if state.cluster_id:  # over pinned TLS, the one place an agent may learn it from
        body["cluster"] = state.cluster_id[:12]
    return jsonify(body)


@bp.get("/v1/ca")
def ca() -> Response:
    """The CA certificate (public): clients must still check it against their pin."""
    pem = current_app.extensions["swarm_enroll"].ca_pem
    return Response(pem, mimetype="application/x-pem-file")


@bp.get("/v1/openapi.json")
def openapi() -> Response:
    return jsonify(spec())
