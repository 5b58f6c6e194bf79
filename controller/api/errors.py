"""Every error answer is JSON `{error, message}`: never HTML, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from agent.wire.errors import WireError

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    @app.errorhandler(WireError)
    def wire_error(exc: WireError):  # type: ignore[no-untyped-def]
        # One line, the code only: the message may quote what the peer sent.
        log.info("refused %s %r from %s: %d %s", request.method, request.path[:200],
                 request.remote_addr, exc.status, exc.code)
        response = jsonify(exc.to_json())
        if exc.retry_after:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        message = {
            404: "no such endpoint; see GET /v1/openapi.json",
            405: "method not allowed on this endpoint; see GET /v1/openapi.json",
            413: "request body is too large",
        }.get(exc.code or 0, exc.description or exc.name)
        if exc.code == 413:
            code = "body_too_large"
        response = jsonify({"error": code, "message": message})
        allow = getattr(exc, "valid_methods", None)
        if allow:  # a 405 says what is allowed (RFC 9110)
            response.headers["Allow"] = ", ".join(allow)
        return response, exc.code

    @app.errorhandler(Exception)
    def internal(exc: Exception):  # type: ignore[no-untyped-def]
        log.error("internal error: %s", type(exc).__name__, exc_info=exc)
        body = {"error": "internal", "message": "internal error; see the controller log"}
        return jsonify(body), 500
