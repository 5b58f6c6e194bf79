"""The Pi's own Docker daemon: what swarm it is in, and joining one.

Four calls of Docker's API (/info, /version, /swarm/join, /swarm/leave) over its unix
socket with http.client: the docker SDK and requests cost the resident agent ~8 MB.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlsplit

from agent.wire.messages import Grant, SwarmState

MAX_ANSWER = 1 << 20  # /info is a few KB; anything far larger is not Docker


class DockerError(Exception):
    """Docker could not be asked: not running (yet), or an answer that is not Docker's."""


class JoinError(Exception):
    """Docker refused to join; the message is Docker's, with any token masked by logging."""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (Docker's; the tests' for other unix-socket servers)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Docker:
    """A Docker daemon at `unix:///path` or `tcp://host:port`; one connection per call,
    so that the supervisor's thread and the enrollment loop may share it."""

    def __init__(self, host: str, timeout: float = 60.0) -> None:
        parts = urlsplit(host)
        if parts.scheme == "unix" and parts.path:
            self._unix = parts.path
        elif parts.scheme in ("tcp", "http") and parts.hostname:
            self._unix, self._host, self._port = "", parts.hostname, parts.port or 2375
        else:
            raise DockerError(f"docker_host must be unix:///path or tcp://host:port, not {host!r}")
        self.host = host
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix:
            return UnixConnection(self._unix, self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             ) -> tuple[int, Any]:
        """(status, parsed JSON or None) of one API call; DockerError if none came."""
        conn = self._connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise DockerError(f"{self.host}: {type(exc).__name__}") from None
        finally:
            conn.close()
        if len(raw) > MAX_ANSWER:
            raise DockerError(f"{self.host}: answer to {path} is larger than {MAX_ANSWER} bytes")
        try:
            return response.status, json.loads(raw) if raw.strip() else None
        except ValueError:
            raise DockerError(f"{self.host}: answer to {path} is not JSON") from None

    def get(self, path: str) -> dict[str, Any]:
        status, data = self.call("GET", path)
        if status != 200 or not isinstance(data, dict):
            raise DockerError(f"{self.host}: GET {path} answered {status}: {_message(data)}")
        return data


def _message(data: Any) -> str:
    message = data.get("message", "") if isinstance(data, dict) else ""
    return str(message)[:500] or "no message"


def connect(docker_host: str) -> Docker:
    return Docker(docker_host)


def local_state(client: Docker) -> SwarmState:
    swarm = client.get("/info").get("Swarm")
    if not isinstance(swarm, dict):
        raise DockerError(f"{client.host}: /info has no Swarm section")
    cluster = swarm.get("Cluster") or {}
    cluster = cluster.get("ID", "") if isinstance(cluster, dict) else ""
    return SwarmState(node_id=str(swarm.get("NodeID") or ""),
                      state=str(swarm.get("LocalNodeState") or ""),
                      manager=swarm.get("ControlAvailable") is True, cluster_id=str(cluster))


def docker_version(client: Docker) -> str:
    return str(client.get("/version").get("Version", ""))[:32]


def join(client: Docker, grant: Grant, advertise_addr: str) -> str:
    """`docker swarm join` with the granted worker token; returns this node's id."""
    body: dict[str, Any] = {"ListenAddr": "0.0.0.0:2377", "RemoteAddrs": list(grant.managers),
                            "JoinToken": grant.join_token}
    if advertise_addr:
        body["AdvertiseAddr"] = advertise_addr
    status, data = client.call("POST", "/swarm/join", body)
    if status != 200:
        raise JoinError(_message(data))
    return local_state(client).node_id


def leave(client: Docker) -> None:
    """`docker swarm leave --force`: the controller removed or revoked this node."""
    status, data = client.call("POST", "/swarm/leave?force=1")
    if status != 200 and "not part of a swarm" not in _message(data):
        raise JoinError(_message(data))
