"""Serve the app over TLS with cheroot, a production WSGI server that does TLS itself."""

from __future__ import annotations

import logging
import signal
import threading

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask

from controller.config import ControllerConfig

log = logging.getLogger(__name__)


def make_server(app: Flask, config: ControllerConfig, threads: int = 8) -> wsgi.Server:
    server = wsgi.Server((config.listen, config.port), app, numthreads=threads,
                         server_name=config.hostname, request_queue_size=256, timeout=10)
    server.ssl_adapter = BuiltinSSLAdapter(str(config.tls_cert), str(config.tls_key))
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
