"""Slow clients must not stop the controller (issue 10, section 4).

Each attack holds 64 connections to the real TLS server that never finish what they
started: one byte of a TLS ClientHello, or a finished handshake followed by one byte of
an HTTP request, or by a whole head and one byte of its body, or by a whole request and
one byte of the next. Before the request gate, each held one of cheroot's 8 workers for its
socket timeout, so /healthz did not answer for 30 s or more. While all 64 are still open,
/healthz and a real agent's signed enrollment must answer within 2 s (the clients'
request timeout; the test measures no duration itself).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from contextlib import ExitStack, closing

import pytest

from agent import __version__
from agent.wire.jws import verify_grant
from agent.wire.keys import ca_public_key, thumbprint
from agent.wire.messages import EnrollmentRequest

from .conftest import LiveController

HELD = 64
ANSWER_WITHIN = 2.0  # seconds: the bound, as each request's timeout


def one_byte_of_client_hello(live: LiveController) -> socket.socket:
    sock = socket.create_connection(live.address)
    sock.sendall(b"\x16")  # a TLS handshake record starts; nothing more ever comes
    return sock


def half_a_request_header(live: LiveController) -> socket.socket:
    context = ssl.create_default_context(cafile=str(live.ca_file))
    sock = context.wrap_socket(socket.create_connection(live.address),
                               server_hostname="127.0.0.1")
    sock.sendall(b"G")  # TLS is done; the request line never ends
    return sock


def half_a_request_body(live: LiveController) -> socket.socket:
    sock = half_a_request_header(live)
    sock.sendall(b"ET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    return sock


def a_request_and_one_byte_of_the_next(live: LiveController) -> socket.socket:
    sock = half_a_request_header(live)
    sock.sendall(b"ET /healthz HTTP/1.1\r\nHost: x\r\n\r\nG")  # pipelined, kept alive
    return sock


@pytest.mark.parametrize("opener", [one_byte_of_client_hello, half_a_request_header,
                                    half_a_request_body, a_request_and_one_byte_of_the_next])
def test_controller_serves_while_slow_clients_hold_connections(
        live_controller: LiveController, opener: Callable[[LiveController], socket.socket],
) -> None:
    created = live_controller.admin("POST", "/v1/tokens", json={"ttl_seconds": 600, "uses": 1})
    assert created.status_code == 201, created.text
    with ExitStack() as held:
        for _ in range(HELD):
            held.enter_context(opener(live_controller))

        with live_controller.session() as session:
            health = session.get(live_controller.url + "/healthz", timeout=ANSWER_WITHIN)
        assert (health.status_code, health.json()["status"]) == (200, "ok")

        client = live_controller.agent(timeout=ANSWER_WITHIN)
        with closing(client):
            status, answer = client.signed("/v1/enrollments", EnrollmentRequest(
                hostname="tok-slow-1", hardware_id="00000000deadbeef", arch="armv7l",
                addresses=["127.0.0.1"], agent_version=__version__,
                bootstrap_token=created.json()["token"],
            ).to_json())
        assert (status, answer["status"]) == (200, "approved")
        ca_key = ca_public_key(live_controller.ca_file.read_bytes())
        grant = verify_grant(answer["grant"], ca_key, thumbprint(client.key), "tok-slow-1")
        assert grant.role == "worker"
