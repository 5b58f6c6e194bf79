"""The controller's view of the swarm, through the local manager's Docker API."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

SWARM_PORT = 2377


class SwarmError(Exception):
    """The swarm cannot do what was asked; the message says why in plain words."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LocalNode:
    node_id: str
    hostname: str
    cluster_id: str
    addr: str


def connect(docker_host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, timeout=30)


def init_swarm(client: docker.DockerClient, advertise_addr: str) -> str:
    """`docker swarm init` unless this daemon already manages a swarm; returns the swarm id."""
    info = client.info()["Swarm"]
    if info.get("LocalNodeState") == "active":
        if not info.get("ControlAvailable"):
            raise SwarmError("not_a_manager", "this Docker daemon is a swarm worker; run "
                             "enroll-controller on a manager")
    else:
        client.swarm.init(advertise_addr=advertise_addr, listen_addr=f"0.0.0.0:{SWARM_PORT}")
    client.swarm.reload()
    return client.swarm.attrs["ID"]


class Swarm:
    """The few swarm operations enrollment needs, with Docker's errors made plain."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def local(self) -> LocalNode:
        info = self.client.info()
        swarm = info["Swarm"]
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise SwarmError("not_a_manager", "the local Docker daemon is not a swarm manager",
                             503)
        return LocalNode(swarm["NodeID"], info["Name"], swarm["Cluster"]["ID"],
                         swarm.get("NodeAddr", ""))

    def worker_token(self) -> str:
        self.client.swarm.reload()
        return self.client.swarm.attrs["JoinTokens"]["Worker"]

    def manager_addresses(self) -> list[str]:
        addrs = []
        for node in self.client.nodes.list(filters={"role": "manager"}):
            status = node.attrs.get("ManagerStatus") or {}
            if status.get("Reachability") == "reachable" and status.get("Addr"):
                addrs.append(status["Addr"])
        return sorted(addrs)

    def node(self, node_id: str) -> dict[str, Any] | None:
        try:
            return self.client.nodes.get(node_id).attrs
        except docker.errors.NotFound:
            return None

    def nodes(self) -> list[dict[str, Any]]:
        return [n.attrs for n in self.client.nodes.list()]

    def wait_ready(self, node_id: str, hostname: str, timeout: float = 20.0) -> dict[str, Any]:
        """The node, once Docker itself says it is Ready under this hostname."""
        deadline = time.monotonic() + timeout
        while True:
            attrs = self.node(node_id)
            if attrs is None:
                raise SwarmError("node_not_in_swarm",
                                 f"node {node_id} is not a member of this swarm")
            name = attrs.get("Description", {}).get("Hostname", "")
            if name and name.lower() != hostname.lower():
                raise SwarmError("hostname_mismatch",
                                 f"swarm node {node_id} is named {name!r}, not {hostname!r}")
            if name and attrs["Status"]["State"] == "ready":
                return attrs
            if time.monotonic() > deadline:
                raise SwarmError("node_not_ready", f"node {node_id} is not Ready yet; retry", 409)
            time.sleep(0.5)

    def finish_join(self, node_id: str, role: str, labels: dict[str, str],
                    availability: str) -> None:
        """Labels, availability and (for managers) promotion, in one spec update."""
        for _ in range(5):
            node = self.client.nodes.get(node_id)
            spec = dict(node.attrs["Spec"])
            spec["Labels"] = {**spec.get("Labels", {}), **labels}
            spec["Availability"] = availability
            spec["Role"] = role
            try:
                node.update(spec)
                return
            except docker.errors.APIError as exc:
                if "update out of sequence" not in str(exc):
                    raise SwarmError("swarm_update_failed",
                                     f"could not update node {node_id}: {exc.explanation}",
                                     502) from None
        raise SwarmError("swarm_update_failed", f"node {node_id} kept changing; retry", 503)
