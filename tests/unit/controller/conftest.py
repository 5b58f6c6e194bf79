"""Controllers on loopback for the admin client's failover: real TLS servers whose answers a
test scripts, a genuine one (its certificate issued by our CA, as controller.pki issues
it) or an impostor (the same kind of certificate from another CA), and an address where
nobody listens."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest

from controller import pki

from ..agent.scripted import Script, Seen, tls_http
from ..helpers import CA

Serve = Callable[..., tuple[str, Seen]]


def admin_api(method: str, path: str, headers: dict[str, str], body: bytes,
              ) -> tuple[int, dict[str, str], bytes]:
    """A controller's admin API, as far as the failover tests ask it."""
    answers: dict[tuple[str, str], Any] = {
        ("GET", "/healthz"): {"status": "ok", "version": "test"},
        ("GET", "/v1/nodes"): {"nodes": [{"hostname": "pi-1", "state": "joined"}],
                               "next": None},
        ("POST", "/v1/nodes/pi-1/approve"): {"id": "enr_1", "hostname": "pi-1",
                                             "state": "approved"},
    }
    answer = answers.get((method, path))
    if answer is None:
        return 404, {}, b'{"error": "not_found", "message": "no such node"}'
    return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def _tls_files(ca: CA, directory: Path) -> tuple[Path, Path]:
    directory.mkdir()
    chain, key = directory / "tls.pem", directory / "tls-key.pem"
    cert, ca_key = pki.load_ca(ca.cert_path, ca.key_path)
    pki.issue_tls_cert(cert, ca_key, chain, key, "ctl", ["127.0.0.1"])
    return chain, key


@pytest.fixture
def serve(ca: CA, other_ca: CA, tmp_path: Path) -> Iterator[Serve]:
    """Factory: serve(script=admin_api, impostor=False) -> (https URL, what it saw)."""
    ours, theirs = _tls_files(ca, tmp_path / "tls"), _tls_files(other_ca, tmp_path / "rogue")
    with ExitStack() as stack:
        def start(script: Script = admin_api, impostor: bool = False) -> tuple[str, Seen]:
            return stack.enter_context(tls_http(*(theirs if impostor else ours), script))

        yield start


@pytest.fixture
def dead_url() -> str:
    """A port on loopback where nobody listens any more."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{closed.getsockname()[1]}"


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """An address that takes no TCP connection at all, as a dead Pi's: a listener on
    loopback whose accept queue is full, so that the kernel drops each new SYN."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    held = []
    for _ in range(4):
        conn = socket.socket()
        conn.setblocking(False)
        with suppress(BlockingIOError):
            conn.connect(("127.0.0.1", port))
        held.append(conn)
    time.sleep(0.1)  # the handshakes of those that fit are done
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        for conn in held:
            conn.close()
        listener.close()


@pytest.fixture
def hangup_url() -> Iterator[str]:
    """An address that takes each connection and closes it unanswered (in the TLS
    handshake): a wrong port, or a stranger on the LAN who took a controller's address."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)  # a client that sends nothing holds it 1 s at most
                with suppress(OSError):
                    conn.recv(4096)  # the ClientHello

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
