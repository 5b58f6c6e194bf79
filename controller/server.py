"""Serve the app over TLS with cheroot, whose workers never wait on a client.

cheroot's BuiltinSSLAdapter completes each TLS handshake in the one accept thread, and its
workers read each request from the socket: either way a client that opens a connection
and stays silent, or sends a request a byte at a time, holds that thread for the socket
timeout (16 such clients stopped the controller). Here the accept thread only wraps the
socket; controller.gate does the handshake and reads each request whole, without ever
blocking, before a worker sees the connection, and bounds how many connections may wait,
per source address and in all, and for how long. Keep-alive works as in cheroot: an idle
connection waits in cheroot's selector and goes back through the gate when its next
request arrives.
"""

from __future__ import annotations

import functools
import json
import logging
import resource
import signal
import threading
from typing import Any

from cheroot import errors, wsgi
from cheroot.server import HTTPConnection, HTTPRequest
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask

from agent.wire.messages import MAX_BODY_BYTES
from controller.config import ControllerConfig
from controller.gate import MAX_HEAD_BYTES, MAX_PENDING, Gates, ReadAheadSSLSocket

log = logging.getLogger(__name__)
# Idle connections kept open for their next request. An agent's first contact is a HEAD
# for a nonce, then its signed POST on the same connection; past cheroot's default of 10
# idle connections, as soon as a few dozen Pis enroll at once, the HEAD's answer closed
# the connection and each POST cost a TLS handshake more on both sides. Bounded: each
# waits at most the socket timeout, and the gate bounds the connections not yet idle.
KEEP_ALIVE = 128


class GatedSSLAdapter(BuiltinSSLAdapter):
    """TLS whose handshake is left to the request gate: wrap() does no I/O."""

    def __init__(self, certificate: str, private_key: str) -> None:
        super().__init__(certificate, private_key)
        self.context.sslsocket_class = ReadAheadSSLSocket

    def wrap(self, sock):  # type: ignore[no-untyped-def]
        try:
            s = self.context.wrap_socket(sock, do_handshake_on_connect=False,
                                         server_side=True)
        except OSError as exc:
            raise errors.FatalSSLAlert(*exc.args) from exc
        return s, {"wsgi.url_scheme": "https", "HTTPS": "on"}


# cheroot's own refusals (before the app sees the request), as the API's error codes
_ERRORS = {"400": "bad_request", "405": "method_not_allowed", "408": "request_timeout",
           "414": "uri_too_long", "500": "internal", "501": "not_implemented",
           "505": "http_version_not_supported"}


class Request(HTTPRequest):
    """cheroot's request, whose own error answers (a malformed or oversized request,
    refused before the app) are JSON `{"error", "message"}` like every other."""

    def simple_response(self, status: Any, msg: str = "") -> None:
        status = str(status)
        number = status[:3]
        if number == "413":
            error = "headers_too_large" if "headers" in str(msg) else "body_too_large"
        else:
            error = _ERRORS.get(number, "bad_request" if number < "500" else "internal")
        body = json.dumps({"error": error, "message": str(msg) or status[4:]}).encode()
        # cheroot closes the connection after its own answers (after 413 and 414 the rest
        # of the request is not even read): said so, unlike cheroot's
        self.close_connection = True
        head = [f"{self.server.protocol} {status}", "Content-Type: application/json",
                f"Content-Length: {len(body)}", "Connection: close"]
        try:
            self.conn.wfile.write("\r\n".join(head).encode("ISO-8859-1") + b"\r\n\r\n" + body)
        except OSError as exc:
            if exc.args[0] not in errors.socket_errors_to_ignore:
                raise


class Connection(HTTPConnection):
    """cheroot's connection without its per-connection caches of the peer's credentials
    (UNIX sockets only; off on TLS): each wraps a method bound to the connection, stored
    on the connection, a reference cycle that only the cyclic garbage collector frees.
    Under a fleet's burst that collector runs late, and each closed connection would wait
    for it with its TLS state and buffers (hundreds at once: megabytes, and freed memory
    the allocator cannot give back); without the cycle a closed connection goes at once."""

    RequestHandlerClass = Request

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cached in ("resolve_peer_creds", "get_peer_creds"):  # the class's own again
            vars(self).pop(cached, None)  # (a cheroot without these caches: nothing to do)


class GatedServer(wsgi.Server):
    """cheroot's WSGI server with controller.gate between its accept loop and its workers."""

    ConnectionClass = Connection

    def __init__(self, *args: Any, gates: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_request_header_size = MAX_HEAD_BYTES
        self.max_request_body_size = MAX_BODY_BYTES
        self.keep_alive_conn_limit = KEEP_ALIVE
        self.gate = Gates(functools.partial(wsgi.Server.process_conn, self), self.timeout,
                          gates)

    def prepare(self) -> None:
        super().prepare()
        self.gate.start()

    def process_conn(self, conn: Any) -> None:
        """A new connection, or a kept-alive one turning readable: to the gate first."""
        self.gate.submit(conn)

    def put_conn(self, conn: Any) -> None:
        """Back to cheroot's idle selector, unless the next request is already here."""
        sock = conn.socket
        if self.ready and (sock._ahead or sock.pending()):
            self.gate.submit(conn)
        else:
            super().put_conn(conn)

    def stop(self) -> None:
        super().stop()
        self.gate.stop()


def make_server(app: Flask, config: ControllerConfig, threads: int = 8) -> wsgi.Server:
    server = GatedServer((config.listen, config.port), app, numthreads=threads, gates=threads,
                         server_name=config.hostname, request_queue_size=256, timeout=10)
    server.ssl_adapter = GatedSSLAdapter(str(config.tls_cert), str(config.tls_key))
    return server


def raise_file_limit(wanted: int = 4 * MAX_PENDING) -> None:
    """Room for the gate's connections and the rest: systemd's default soft limit is 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)


def serve_forever(server: wsgi.Server) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    raise_file_limit()
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: stopping", signum)
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.prepare()
    log.info("listening on https://%s:%d", *server.bind_addr[:2])
    server.serve()
