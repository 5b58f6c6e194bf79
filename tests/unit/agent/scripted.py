"""Real HTTP servers whose answers a test scripts: on a unix socket (a stand-in Docker) and
over TLS on loopback (a stand-in controller with a certificate of our CA)."""

from __future__ import annotations

import http.server
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (method, path, headers, body) -> (status, headers, body); status 0: hang up
Script = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class Seen:
    """What the server received: each request, and each connection it accepted."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0


def _handler(script: Script, seen: Seen) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the controller's server

        def setup(self) -> None:
            seen.connections += 1
            super().setup()

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.requests.append((self.command, self.path, headers, body))
            status, extra, answer = script(self.command, self.path, headers, body)
            if not status:  # hang up without an answer, as a controller that died mid-request
                self.close_connection = True
                return
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

        do_GET = do_POST = do_HEAD = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        sock, _ = super().get_request()
        return sock, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port)


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


@contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def unix_http(path: Path, script: Script) -> Iterator[Seen]:
    seen = Seen()
    server = _UnixServer(str(path), _handler(script, seen))
    with _serving(server):
        yield seen


@contextmanager
def tls_http(cert_chain: Path, key: Path, script: Script) -> Iterator[tuple[str, Seen]]:
    """(https URL on 127.0.0.1, what it saw)."""
    seen = Seen()
    server = _TLSServer(("127.0.0.1", 0), _handler(script, seen))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_chain), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with _serving(server):
        yield f"https://127.0.0.1:{server.server_address[1]}", seen
