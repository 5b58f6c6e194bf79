"""A plain HTTP client over a unix socket, as the visualizer's server talks to its socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from agent.dockerapi import UnixConnection


def request(path: Path, target: str, method: str = "GET",
            timeout: float = 10) -> tuple[int, Any]:
    """(status, parsed JSON body or the raw text) of one request, sent as given."""
    conn = UnixConnection(str(path), timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", "docker")
        conn.endheaders()
        response = conn.getresponse()
        raw = response.read().decode(errors="replace")
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def raw_exchange(path: Path, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are and read the answer until the server closes (or resets: a
    server that refuses a request before reading all of it)."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)
