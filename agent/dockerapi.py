"""Docker's Engine API over its unix socket (or TCP), with nothing but http.client.

Shared by the agent and the controller: the docker SDK and requests cost each process
~8 MB resident and a millisecond of CPU per call, and both need only a few calls.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

MAX_ANSWER = 1 << 20  # the agent's calls: /info is a few KB; anything far larger is not Docker


class DockerError(Exception):
    """Docker could not be asked: not running (yet), or an answer that is not Docker's."""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (Docker's; the tests' for other unix-socket servers)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


# A kept connection the daemon closed meanwhile (it restarted): the call is made once more
# on a new one. The daemon may have read a request it then did not answer; the controller's
# writes are compare-and-swaps, which refuse to apply twice.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Docker:
    """A Docker daemon at `unix:///path` or `tcp://host:port`, which any number of threads
    may share: each call has a connection to itself. By default it is made for the call
    (the agent makes a few calls); with `keep_alive`, up to that many are kept idle for
    the next calls (the controller makes several per grant, and a connection made and
    torn down costs it and the daemon some 0.1 and 0.3 ms of CPU)."""

    def __init__(self, host: str, timeout: float = 60.0, max_answer: int = MAX_ANSWER,
                 keep_alive: int = 0) -> None:
        parts = urlsplit(host)
        if parts.scheme == "unix" and parts.path:
            self._unix = parts.path
        elif parts.scheme in ("tcp", "http") and parts.hostname:
            self._unix, self._host, self._port = "", parts.hostname, parts.port or 2375
        else:
            raise DockerError(f"docker_host must be unix:///path or tcp://host:port, not {host!r}")
        self.host = host
        self.timeout = timeout
        self.max_answer = max_answer
        self.keep_alive = keep_alive
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._unix:
            return UnixConnection(self._unix, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None,
             params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or None) of one API call; DockerError if none came."""
        target = f"{path}?{urlencode(params)}" if params else path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        while True:
            conn, kept = self._take()
            try:
                conn.request(method, target, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read(self.max_answer + 1)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if kept and isinstance(exc, _STALE):
                    continue  # (a new connection next: one that fails is not kept)
                raise DockerError(f"{self.host}: {type(exc).__name__}") from None
            break
        if len(raw) > self.max_answer or response.will_close:
            conn.close()
        else:
            self._give(conn)
        if len(raw) > self.max_answer:
            raise DockerError(f"{self.host}: answer to {path} is larger than "
                              f"{self.max_answer} bytes")
        try:
            return response.status, json.loads(raw) if raw.strip() else None
        except ValueError:
            if response.status >= 400:  # a proxy's or an old daemon's plain-text error
                return response.status, {"message": raw.decode(errors="replace")[:500]}
            raise DockerError(f"{self.host}: answer to {path} is not JSON") from None

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection (and True), else a new one."""
        with self._idle_lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connection(self.timeout), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            if len(self._idle) < self.keep_alive:
                self._idle.append(conn)
                return
        conn.close()

    def get(self, path: str) -> dict[str, Any]:
        status, data = self.call("GET", path)
        if status != 200 or not isinstance(data, dict):
            raise DockerError(f"{self.host}: GET {path} answered {status}: {message(data)}")
        return data

    def stream(self, path: str, params: dict[str, Any] | None = None) -> JSONLines:
        """A streamed answer (`/events`), one JSON object per line, read without a timeout."""
        target = f"{path}?{urlencode(params)}" if params else path
        conn = self._connection(None)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerError(f"{self.host}: {type(exc).__name__}") from None
        if response.status != 200:
            raw = response.read(self.max_answer)
            conn.close()
            raise DockerError(f"{self.host}: GET {path} answered {response.status}: "
                              f"{raw[:300].decode(errors='replace')}")
        return JSONLines(conn, response, self.max_answer)


class JSONLines:
    """The lines of a streamed answer, parsed; close() ends the stream from any thread."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 max_line: int) -> None:
        self._conn, self._response, self._max_line = conn, response, max_line

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    line = self._response.readline(self._max_line)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    raise DockerError(f"stream ended: {type(exc).__name__}") from None
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            self._conn.close()  # here, not in close(): the reader may be inside http.client

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the reader wakes to an end of stream


def message(data: Any) -> str:
    """Docker's own words for an error answer."""
    text = data.get("message", "") if isinstance(data, dict) else ""
    return str(text)[:500] or "no message"
