"""An agent's HEAD for a nonce and its signed POST share one TLS connection, even while
many other connections wait idle (a fleet enrolling at once)."""

from __future__ import annotations

import http.client
import ssl
from contextlib import ExitStack, closing

from controller.server import KEEP_ALIVE

from .conftest import LiveController


def nonce_on_a_kept_connection(live: LiveController,
                               ctx: ssl.SSLContext) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(*live.address, context=ctx, timeout=10)
    conn.request("HEAD", "/v1/nonce")
    answer = answer_of(conn)
    assert answer.status == 204 and answer.getheader("Replay-Nonce")
    return conn


def answer_of(conn: http.client.HTTPSConnection) -> http.client.HTTPResponse:
    answer = conn.getresponse()
    answer.read()
    return answer


def test_the_post_follows_its_head_on_the_same_connection_while_others_wait(
        live_controller: LiveController) -> None:
    ctx = ssl.create_default_context(cafile=str(live_controller.ca_file))
    ctx.check_hostname = False
    with ExitStack() as stack:
        idle = [stack.enter_context(closing(nonce_on_a_kept_connection(live_controller, ctx)))
                for _ in range(64)]  # other Pis between their HEAD and POST
        conn = stack.enter_context(closing(nonce_on_a_kept_connection(live_controller, ctx)))
        sock = conn.sock
        conn.request("POST", "/v1/enrollments", body=b"{}",
                     headers={"Content-Type": "application/jose"})
        answer = answer_of(conn)
        assert answer.status == 400  # (an unsigned body) answered on the same connection:
        assert conn.sock is sock and sock is not None
        assert all(c.sock is not None for c in idle)


def test_idle_connections_kept_are_bounded(live_controller: LiveController) -> None:
    """Past KEEP_ALIVE idle connections, an answer closes its connection (a stranger who
    holds many idle costs the others a handshake each, never memory without bound)."""
    ctx = ssl.create_default_context(cafile=str(live_controller.ca_file))
    ctx.check_hostname = False
    with ExitStack() as stack:
        conns = [stack.enter_context(closing(nonce_on_a_kept_connection(live_controller, ctx)))
                 for _ in range(KEEP_ALIVE + 16)]
        kept = [c for c in conns if c.sock is not None]
        assert KEEP_ALIVE - 16 <= len(kept) <= KEEP_ALIVE + 1  # (one may be counted late)
