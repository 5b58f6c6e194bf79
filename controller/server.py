"""Serve the app over TLS with cheroot, a production WSGI server that does TLS itself."""

from __future__ import annotations

import logging
import signal
import threading

from cheroot import errors, wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask

from controller.config import ControllerConfig

log = logging.getLogger(__name__)


class DeferredHandshakeSSLAdapter(BuiltinSSLAdapter):
    """TLS whose handshake runs in the worker thread that serves the connection.

    cheroot's BuiltinSSLAdapter.wrap() completes the handshake in the server's one accept
    thread, so each new connection waits until the one before it has finished its
    handshake (client round trips included), and a client that opens a TCP connection
    and stays silent stalls every new connection for the socket timeout. Here the accept
    thread only wraps the socket; OpenSSL does the handshake on the first read, in one of
    the workers, several at once.
    """

    def wrap(self, sock):  # type: ignore[no-untyped-def]
        try:
            s = self.context.wrap_socket(sock, do_handshake_on_connect=False,
                                         server_side=True)
        except OSError as exc:
            raise errors.FatalSSLAlert(*exc.args) from exc
        return s, {"wsgi.url_scheme": "https", "HTTPS": "on"}


def make_server(app: Flask, config: ControllerConfig, threads: int = 8) -> wsgi.Server:
    server = wsgi.Server((config.listen, config.port), app, numthreads=threads,
                         server_name=config.hostname, request_queue_size=256, timeout=10)
    server.ssl_adapter = DeferredHandshakeSSLAdapter(str(config.tls_cert), str(config.tls_key))
    return server


def serve_forever(server: wsgi.Server) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
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
