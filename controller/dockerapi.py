"""The local manager's Docker API, as the controller uses it: nodes, services, tasks,
configs (the state store), the swarm itself, and the events stream.

Over agent.dockerapi (http.client on Docker's unix socket) rather than the docker SDK:
the SDK and requests cost every manager's controller ~8 MB resident and about a
millisecond of CPU per call, and a fleet enrolling makes hundreds of store writes a
second. Paths are unversioned (the daemon's own API version), as the SDK negotiates.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any
from urllib.parse import quote

from agent.dockerapi import Docker, DockerError, JSONLines, message

MAX_ANSWER = 256 << 20  # a listing of 5,000 state documents is ~20 MB; the daemon is trusted
KEEP_ALIVE = 8  # idle connections to the daemon kept for the next calls (the workers')

__all__ = ["NO_LEADER", "APIError", "DockerAPI", "DockerError", "NotFound", "connect",
           "docker_time", "no_leader"]


class APIError(Exception):
    """Docker answered with an error; `explanation` is Docker's own message."""

    def __init__(self, status_code: int, explanation: str) -> None:
        super().__init__(f"{status_code}: {explanation}")
        self.status_code, self.explanation = status_code, explanation


class NotFound(APIError):
    """Docker answered 404: no such node, service, config or task."""


# Docker's words when the swarm's Raft has no leader (its quorum is lost); not its refusal
# of a change that would lose the quorum ("... loss of quorum")
NO_LEADER = ("does not have a leader", "no elected cluster leader")


def no_leader(exc: APIError) -> bool:
    """Docker refused because the swarm's Raft has no leader."""
    text = f"{exc.explanation} {exc}".lower()
    return any(mark in text for mark in NO_LEADER)


def _filters(filters: dict[str, Any] | None) -> dict[str, str] | None:
    """Docker reads each filter as a list of strings: {"role": ["manager"]}."""
    if not filters:
        return None
    lists = {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in filters.items()}
    return {"filters": json.dumps(lists)}


def _ref(ref: str) -> str:
    return quote(ref, safe="")


class DockerAPI:
    """One daemon (`unix:///var/run/docker.sock` or `tcp://host:port`); thread-safe."""

    def __init__(self, host: str, timeout: float = 30.0) -> None:
        self.docker = Docker(host, timeout=timeout, max_answer=MAX_ANSWER,
                             keep_alive=KEEP_ALIVE)
        self.host = host

    def _do(self, method: str, path: str, body: Any = None,
            params: dict[str, Any] | None = None) -> Any:
        status, data = self.docker.call(method, path, body, params)
        if status == 404:
            raise NotFound(status, message(data))
        if status >= 400:
            raise APIError(status, message(data))
        return data

    # -- the daemon and the swarm ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self._do("GET", "/info")

    def inspect_swarm(self) -> dict[str, Any]:
        return self._do("GET", "/swarm")

    def init_swarm(self, advertise_addr: str, listen_addr: str) -> str:
        return self._do("POST", "/swarm/init", {"AdvertiseAddr": advertise_addr,
                                                "ListenAddr": listen_addr})

    def update_swarm(self, version: int, spec: dict[str, Any],
                     rotate_worker_token: bool = False) -> None:
        """The swarm's current spec goes back with it: Docker resets what a spec leaves out."""
        params = {"version": version,
                  "rotateWorkerToken": "true" if rotate_worker_token else "false"}
        self._do("POST", "/swarm/update", spec, params)

    # -- nodes -----------------------------------------------------------------------------

    def nodes(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._do("GET", "/nodes", params=_filters(filters)) or []

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        return self._do("GET", f"/nodes/{_ref(node_id)}")

    def update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        self._do("POST", f"/nodes/{_ref(node_id)}/update", spec, {"version": version})

    def remove_node(self, node_id: str, force: bool = False) -> None:
        self._do("DELETE", f"/nodes/{_ref(node_id)}", params={"force": "1" if force else "0"})

    # -- services and tasks ----------------------------------------------------------------

    def services(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._do("GET", "/services", params=_filters(filters)) or []

    def inspect_service(self, ref: str) -> dict[str, Any]:
        return self._do("GET", f"/services/{_ref(ref)}")

    def create_service(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._do("POST", "/services/create", spec)

    def update_service(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        self._do("POST", f"/services/{_ref(service_id)}/update", spec, {"version": version})

    def remove_service(self, ref: str) -> None:
        self._do("DELETE", f"/services/{_ref(ref)}")

    def tasks(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._do("GET", "/tasks", params=_filters(filters)) or []

    # -- configs (the cluster state's documents) -------------------------------------------

    def configs(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._do("GET", "/configs", params=_filters(filters)) or []

    def inspect_config(self, ref: str) -> dict[str, Any]:
        return self._do("GET", f"/configs/{_ref(ref)}")

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, Any]:
        return self._do("POST", "/configs/create", {
            "Name": name, "Data": base64.b64encode(data).decode(), "Labels": labels})

    def update_config(self, ref: str, version: int, spec: dict[str, Any]) -> None:
        """Docker allows only the labels to change; under `version`, a compare-and-swap."""
        self._do("POST", f"/configs/{_ref(ref)}/update", spec, {"version": version})

    def remove_config(self, ref: str) -> None:
        self._do("DELETE", f"/configs/{_ref(ref)}")

    # -- events ----------------------------------------------------------------------------

    def events(self, filters: dict[str, Any] | None = None) -> JSONLines:
        """Docker's events from now on, until close()."""
        return self.docker.stream("/events", _filters(filters))


def connect(docker_host: str) -> DockerAPI:
    return DockerAPI(docker_host)


def docker_time(text: str) -> float | None:
    """Docker's RFC 3339 time with nanoseconds, as a Unix time (None if unreadable)."""
    if not text:
        return None
    head, _, rest = text.partition(".")
    frac = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0") if rest else "000000"
    try:
        when = datetime.datetime.fromisoformat(head.rstrip("Z")).replace(
            tzinfo=datetime.UTC)
    except ValueError:
        return None
    return when.timestamp() + int(frac) / 1e6
