"""Serve the filtered Docker API on a unix socket, `docker.sock` in a directory of its own.

The baseline binds the directory (not the socket file) at the visualizer's `/var/run`:
the visualizer dials `/var/run/docker.sock`, and a restarted controller's new socket
shows up in tasks that are already running. The socket is 0666 in a 0755 directory: any
local process on this manager (and the viz containers, whatever their user) may read
what viz shows on port 8080 to the whole LAN anyway, and nothing more.

Bounded, since a container talks to it: cheroot with a few workers, short timeouts, a
small header limit and no request body; Docker is asked each endpoint at most once per
`cache_seconds`, however many browsers poll.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cheroot import wsgi

from controller.config import VIZ_SOCKET_NAME
from controller.dockerapi import DockerAPI
from controller.viz.filter import Refused, route, scrub

log = logging.getLogger(__name__)

Fetch = Callable[[str], Any]  # endpoint name -> Docker's parsed JSON answer


def docker_fetch(api: DockerAPI) -> Fetch:
    """Ask the local Docker API: only these three calls exist here."""
    calls = {"nodes": api.nodes, "services": api.services, "tasks": api.tasks}
    return lambda endpoint: calls[endpoint]()


class _Cached:
    """Each endpoint's answer, reused for `ttl` seconds."""

    def __init__(self, fetch: Fetch, ttl: float) -> None:
        self.fetch, self.ttl = fetch, ttl
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, bytes]] = {}

    def __call__(self, endpoint: str) -> bytes:
        with self._lock:
            hit = self._answers.get(endpoint)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            body = json.dumps(scrub(endpoint, self.fetch(endpoint))).encode()
            self._answers[endpoint] = (time.monotonic(), body)
            return body


def make_app(fetch: Fetch, cache_seconds: float = 1.0) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: route the raw request line, ask Docker, scrub the answer."""
    answer = _Cached(fetch, cache_seconds)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, body = "200 OK", b""
        try:
            body = answer(route(environ["REQUEST_METHOD"], environ.get("REQUEST_URI", "")))
        except Refused as exc:
            status, body = "403 Forbidden", _error("forbidden", str(exc))
        except Exception as exc:  # an absent daemon, or one that refuses
            log.warning("viz socket: the local Docker API failed: %s", type(exc).__name__)
            status, body = "502 Bad Gateway", _error(
                "docker_unavailable", "the local Docker API did not answer; see the "
                "controller log")
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    return app


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


class VizSocket:
    """The filtered API on `<directory>/docker.sock`, served from a background thread."""

    def __init__(self, directory: Path, fetch: Fetch, threads: int = 2,
                 cache_seconds: float = 1.0) -> None:
        self.directory = directory
        self.path = directory / VIZ_SOCKET_NAME
        self._server = wsgi.Server(str(self.path), make_app(fetch, cache_seconds),
                                   numthreads=threads, request_queue_size=16, timeout=5,
                                   accepted_queue_size=32, accepted_queue_timeout=5)
        self._server.max_request_header_size = 8 * 1024
        self._server.max_request_body_size = 1  # a GET has no body
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket of an earlier run) and serve in the background."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # explicit: the controller's unit runs with UMask=0077
        self._server.prepare()
        self.path.chmod(0o666)
        self._thread = threading.Thread(target=self._server.serve, name="viz-socket",
                                        daemon=True)
        self._thread.start()
        log.info("filtered Docker API for viz on %s", self.path)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.stop()
        self._thread.join(timeout=10)
        self._thread = None
        self.path.unlink(missing_ok=True)
