"""The request gate: no worker ever waits on a client, in the TLS handshake or a request.

cheroot hands each accepted connection, and each kept-alive one that turns readable, to
one of a few worker threads, which then block on the client: one byte of a ClientHello or
half a request header holds a worker for the socket timeout, and sixteen such clients
stopped the controller. Here a connection first goes to a gate: a thread with a selector
that does, without ever blocking, what a worker would wait for (`_progress`: the TLS
handshake, then reading the request head and its body, bounded by the API's body limit,
into the connection's read-ahead buffer). Only a connection whose whole request has
arrived reaches a worker, which then reads it from memory. A slow client costs a socket
and a few KB, never a worker.

There are as many gates as workers, each with its share of the connections: one thread
alone, waiting for the GIL after each TLS call while the workers run Python, fell behind
in an enrollment storm (OpenSSL itself runs without the GIL, several handshakes at once).

So that holding connections open cannot exhaust the process either:
- a connection must have sent its whole request within the server's timeout of entering
  a gate (accepted, or kept alive and readable again), else it is closed;
- at most MAX_PENDING connections wait in the gates, MAX_PENDING_PER_ADDRESS from one
  source address (each gate holds its share); a new one past a cap closes the oldest
  waiting one (of that address, else overall). Oldest first: to crowd out a real client an
  attacker must open connections faster than that client completes its handshake, not
  merely hold them.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from agent.wire.messages import MAX_BODY_BYTES

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers; also cheroot's limit
MAX_PENDING = 1024
# Twice the benchmark's 256 agents in flight behind one address (closed connections pass
# through the gate too, on their way out).
MAX_PENDING_PER_ADDRESS = 512
# What the gate reads ahead at most: cheroot refuses anything longer from memory.
MAX_AHEAD = MAX_HEAD_BYTES + MAX_BODY_BYTES + 1024
WARN_EVERY = 60.0  # seconds between warnings that the caps are closing connections
_PLAIN_HTTP_MESSAGE = (b'{"error": "https_only", "message": "this port speaks HTTPS only: use '
                       b'an https:// URL"}')
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(_PLAIN_HTTP_MESSAGE), _PLAIN_HTTP_MESSAGE))


class ReadAheadSSLSocket(ssl.SSLSocket):
    """An SSLSocket whose reads first return what the gate read ahead without blocking."""

    handshaken = False
    deadline = 0.0  # when the gate gives up on the request now awaited (0: none awaited)
    _ahead = b""

    def read_ahead(self) -> bool:
        """Read what has arrived, without blocking; False once the peer has closed."""
        ahead = bytearray(self._ahead)
        try:
            while len(ahead) < MAX_AHEAD:
                data = super().recv(MAX_AHEAD - len(ahead))
                if not data:
                    return False
                ahead += data
        except ssl.SSLWantReadError:
            pass
        finally:
            self._ahead = bytes(ahead)
        return True

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._ahead:
            data, self._ahead = self._ahead[:buflen], self._ahead[buflen:]
            return data
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._ahead:
            view = memoryview(buffer).cast("B")
            n = min(len(self._ahead), nbytes or len(view))
            view[:n], self._ahead = self._ahead[:n], self._ahead[n:]
            return n
        return super().recv_into(buffer, nbytes, flags)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def request_ready(data: bytes) -> bool:
    """Whether `data` holds a whole request (head and body), or more than cheroot accepts.

    A worker given such a connection never waits on the client: it reads from memory,
    or refuses from memory what is too long (cheroot's header and body limits).
    """
    if len(data) >= MAX_AHEAD:
        return True
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_HEAD_BYTES
    head, body = data[:end], len(data) - end - 4
    encoding = _header(head, b"transfer-encoding")
    if encoding is not None:
        return data.endswith(b"0\r\n\r\n") or body > MAX_BODY_BYTES
    length = _header(head, b"content-length") or b"0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return True  # cheroot answers 400 or 413 without reading the body
    return body >= int(length)


class PendingTable:
    """Connections waiting in the gate, with their caps and deadlines (gate thread only)."""

    def __init__(self, limit: int = MAX_PENDING,
                 per_address: int = MAX_PENDING_PER_ADDRESS) -> None:
        self.limit = limit
        self.per_address = per_address
        self._entries: dict[Any, tuple[str, float]] = {}
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    def add(self, key: Any, address: str, deadline: float) -> list[Any]:
        """Admit `key`; return the entries it pushed out (already removed): the oldest."""
        if self._counts.get(address, 0) >= self.per_address:
            crowd = [(d, k) for k, (a, d) in self._entries.items() if a == address]
        elif len(self._entries) >= self.limit:
            crowd = [(d, k) for k, (_, d) in self._entries.items()]
        else:
            crowd = []
        evicted = [min(crowd, key=lambda entry: entry[0])[1]] if crowd else []
        for old in evicted:
            self.remove(old)
        self._entries[key] = (address, deadline)
        self._counts[address] = self._counts.get(address, 0) + 1
        return evicted

    def remove(self, key: Any) -> None:
        address, _ = self._entries.pop(key)
        self._counts[address] -= 1
        if not self._counts[address]:
            del self._counts[address]

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def expired(self, now: float) -> list[Any]:
        """Remove and return the entries past their deadline."""
        gone = [key for key, (_, deadline) in self._entries.items() if deadline <= now]
        for key in gone:
            self.remove(key)
        return gone


def _buffered(conn: Any) -> bytes:
    """What cheroot's reader already holds of this connection (a pipelined request)."""
    return bytes(conn.rfile.peek(0)) if conn.rfile.has_data() else b""


def _answer_plain_http(sock: socket.socket) -> None:
    """Tell an http:// client what is wrong, on the raw socket, if it takes it at once."""
    with suppress(OSError):
        socket.socket.send(sock, PLAIN_HTTP_ANSWER)


def _close(conn: Any) -> None:
    with suppress(OSError):
        conn.close()


def _progress(conn: Any) -> int:
    """Take a connection as far as it goes without blocking.

    0: its request is whole (see request_ready); -1: it is closed or failed; else the
    selector events it waits for.
    """
    sock: ReadAheadSSLSocket = conn.socket
    sock.setblocking(False)
    try:
        if not sock.handshaken:
            sock.do_handshake()
            sock.handshaken = True
        if not sock.read_ahead():
            return -1
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except OSError as exc:  # TLS alerts, resets, plain HTTP on the TLS port
        log.debug("%s: %s; closed", conn.remote_addr, exc)
        if "http request" in str(exc).lower():
            _answer_plain_http(sock)
        return -1
    return 0 if request_ready(_buffered(conn) + sock._ahead) else selectors.EVENT_READ


class RequestGate:
    """One gate: a thread that brings connections to a whole request, then `dispatch`es them.

    `submit` takes cheroot's HTTPConnection (its socket a ReadAheadSSLSocket) from any
    thread; the selector and the table belong to the gate's own thread.
    """

    def __init__(self, dispatch: Callable[[Any], None], timeout: float,
                 limit: int = MAX_PENDING, per_address: int = MAX_PENDING_PER_ADDRESS) -> None:
        self.dispatch = dispatch
        self.timeout = timeout
        self.pending = PendingTable(limit, per_address)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._inbox: list[Any] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._checked = 0.0
        self._warned = -WARN_EVERY
        self._thread = threading.Thread(target=self._loop, name="request-gate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join()

    # -- any thread --------------------------------------------------------------------

    def submit(self, conn: Any) -> None:
        """A new connection, or a kept-alive one with bytes of its next request.

        The next request on a kept-alive connection has usually arrived whole: it goes on
        to a worker at once, from the calling thread (no TLS handshake to do there).
        """
        sock: ReadAheadSSLSocket = conn.socket
        if not sock.deadline:
            sock.deadline = time.monotonic() + self.timeout
        if sock.handshaken:
            try:
                events = _progress(conn)
            except Exception:
                log.exception("%s: unexpected error reading a request; closed",
                              conn.remote_addr)
                events = -1
            if events == 0:
                self._hand_over(conn)
                return
            if events == -1:
                _close(conn)
                return
        with self._lock:
            if self._stopping:
                _close(conn)
                return
            self._inbox.append(conn)
            wake = len(self._inbox) == 1  # else a wake-up is already on its way
        if wake:
            self._wake()

    def _hand_over(self, conn: Any) -> None:
        """The request is whole: blocking again, a fresh deadline for the next one."""
        conn.socket.deadline = 0.0
        conn.socket.settimeout(self.timeout)
        self.dispatch(conn)

    def _wake(self) -> None:
        with suppress(BlockingIOError):  # a full pipe: already awake
            self._wake_w.send(b"\0")

    # -- the gate's thread -------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(0.5 if len(self.pending) else None):
                    if key.fileobj is self._wake_r:
                        self._take_inbox()
                    elif key.data in self.pending:
                        self._guarded(self._advance, key.data)
                now = time.monotonic()
                if now - self._checked >= 0.5:  # deadlines, to the second: close enough
                    self._checked = now
                    for conn in self.pending.expired(now):
                        log.debug("%s: no whole request in %.0f s; closed", conn.remote_addr,
                                  self.timeout)
                        self._drop(conn)
        finally:
            self._shut()

    def _guarded(self, step: Callable[[Any], None], conn: Any) -> None:
        """One connection's trouble closes that connection, never the gate."""
        try:
            step(conn)
        except Exception:
            log.exception("%s: unexpected error in the request gate; closed", conn.remote_addr)
            self._drop(conn)

    def _take_inbox(self) -> None:
        with suppress(BlockingIOError):
            self._wake_r.recv(4096)
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for conn in inbox:
            self._guarded(self._admit, conn)

    def _admit(self, conn: Any) -> None:
        address = str(conn.remote_addr)
        evicted = self.pending.add(conn, address, conn.socket.deadline)
        for old in evicted:
            self._drop(old)
        if evicted and time.monotonic() - self._warned > WARN_EVERY:
            self._warned = time.monotonic()
            log.warning("too many connections waiting for their request (%d in this gate, "
                        "%d of them from %s): closing the oldest", len(self.pending),
                        self.pending.count(address), address)
        self._selector.register(conn.socket, selectors.EVENT_READ, conn)
        self._advance(conn)

    def _advance(self, conn: Any) -> None:
        events = _progress(conn)
        if events == 0:
            self._forget(conn)
            self._hand_over(conn)
        elif events == -1:
            self._drop(conn)
        else:
            self._selector.modify(conn.socket, events, conn)

    def _forget(self, conn: Any) -> None:
        if conn in self.pending:
            self.pending.remove(conn)
        with suppress(KeyError, ValueError):  # not registered, or its socket is gone
            self._selector.unregister(conn.socket)

    def _drop(self, conn: Any) -> None:
        self._forget(conn)
        _close(conn)

    def _shut(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                _close(key.data)
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for conn in inbox:
            _close(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class Gates:
    """`count` gates, each with its share of the connections and of the caps."""

    def __init__(self, dispatch: Callable[[Any], None], timeout: float, count: int) -> None:
        self.gates = [RequestGate(dispatch, timeout, MAX_PENDING // count,
                                  MAX_PENDING_PER_ADDRESS // count) for _ in range(count)]

    def start(self) -> None:
        for gate in self.gates:
            gate.start()

    def stop(self) -> None:
        for gate in self.gates:
            gate.stop()

    def submit(self, conn: Any) -> None:
        self.gates[conn.socket.fileno() % len(self.gates)].submit(conn)
