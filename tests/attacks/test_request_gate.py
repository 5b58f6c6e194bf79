"""The request gate (controller.gate) keeps HTTP working as before for real clients.

It reads each request ahead of cheroot's workers; these check, over the real TLS server,
that what it reads reaches the worker intact and in order, and that what cheroot refuses
is still refused with an answer rather than a wait.
"""

from __future__ import annotations

import socket
import ssl

from .conftest import LiveController

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _tls(live: LiveController) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(live.ca_file))
    sock = context.wrap_socket(socket.create_connection(live.address, timeout=10),
                               server_hostname="127.0.0.1")
    return sock


def _response(sock: ssl.SSLSocket, buffer: bytearray) -> tuple[bytes, bytes]:
    """One response (status line, body) read from `sock`; what follows stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    buffer[:] = rest[length:]
    return head.split(b"\r\n")[0], rest[:length]


def test_kept_alive_and_pipelined_requests_are_answered_in_order(
        live_controller: LiveController) -> None:
    with _tls(live_controller) as sock:
        buffer = bytearray()
        sock.sendall(HEALTHZ)
        assert _response(sock, buffer)[0] == b"HTTP/1.1 200 OK"
        sock.sendall(HEALTHZ + b"GET /v1/ca HTTP/1.1\r\nHost: x\r\n\r\n" + HEALTHZ[:9])
        first, second = _response(sock, buffer), _response(sock, buffer)
        assert b'"status":"ok"' in first[1]
        assert second[1].startswith(b"-----BEGIN CERTIFICATE-----")
        sock.sendall(HEALTHZ[9:])  # the rest of the third, split across reads
        assert b'"status":"ok"' in _response(sock, buffer)[1]


def test_a_body_sent_in_pieces_reaches_the_app_whole(live_controller: LiveController) -> None:
    body = b"x" * 10_000  # not a JWS: the app must see all of it to say so
    head = (b"POST /v1/enrollments HTTP/1.1\r\nHost: x\r\nContent-Type: application/jose\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with _tls(live_controller) as sock:
        for piece in (head[:7], head[7:] + body[:3000], body[3000:]):
            sock.sendall(piece)
        status, answer = _response(sock, bytearray())
    assert status == b"HTTP/1.1 400 BAD REQUEST"
    assert b'"error":"bad_jws"' in answer


def test_oversized_head_and_body_are_refused_not_awaited(live_controller: LiveController) -> None:
    with _tls(live_controller) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n")
        assert _response(sock, bytearray())[0].startswith(b"HTTP/1.1 413 ")
    with _tls(live_controller) as sock:
        sock.sendall(b"POST /v1/enrollments HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
        assert _response(sock, bytearray())[0].startswith(b"HTTP/1.1 413 ")


def test_plain_http_on_the_tls_port_is_told_to_use_https(live_controller: LiveController) -> None:
    with socket.create_connection(live_controller.address, timeout=10) as sock:
        sock.sendall(HEALTHZ)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"https://" in answer
