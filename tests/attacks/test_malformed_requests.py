"""Requests the server refuses before the app sees them (oversized, malformed, plain HTTP):
answered in the API's JSON error form, over the real cheroot + TLS server."""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

import pytest

from agent.wire.messages import MAX_BODY_BYTES
from controller.gate import MAX_HEAD_BYTES

from .conftest import LiveController


def ask(live: LiveController, request: bytes, tls: bool = True) -> tuple[int, dict[str, str],
                                                                          dict[str, Any]]:
    """Send raw bytes, read the answer until the server closes or its body is whole."""
    with socket.create_connection(live.address, timeout=10) as raw:
        sock: Any = raw
        if tls:
            ctx = ssl.create_default_context(cafile=str(live.ca_file))
            ctx.check_hostname = False
            sock = ctx.wrap_socket(raw)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                _headers(data).get("content-length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), _headers(data), json.loads(body)


def _headers(data: bytes) -> dict[str, str]:
    lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.mark.parametrize(("request_bytes", "status", "error"), [
    (b"POST /v1/enrollments HTTP/1.1\r\nHost: x\r\nContent-Type: application/jose\r\n"
     b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), 413, "body_too_large"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
     413, "headers_too_large"),
    (b"GET /" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "bad_request"),
], ids=["body", "headers", "uri", "request-line", "content-length"])
def test_refused_before_the_app_in_the_apis_json_form(
        live_controller: LiveController, request_bytes: bytes, status: int, error: str) -> None:
    got, headers, body = ask(live_controller, request_bytes)
    assert (got, body["error"]) == (status, error)
    assert headers["content-type"] == "application/json" and body["message"]
    assert headers["connection"] == "close"  # (cheroot closes after its own answers)


def test_plain_http_to_the_tls_port_is_told_to_use_https(
        live_controller: LiveController) -> None:
    got, headers, body = ask(live_controller, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                             tls=False)
    assert (got, body["error"]) == (400, "https_only")
    assert headers["content-type"] == "application/json" and "https://" in body["message"]
