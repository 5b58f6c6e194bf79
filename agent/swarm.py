"""The Pi's own Docker daemon: what swarm it is in, and joining one.

Four calls of Docker's API (agent.dockerapi): /info, /version, /swarm/join, /swarm/leave.
"""

from __future__ import annotations

from typing import Any

from agent.dockerapi import Docker, DockerError, message
from agent.wire.messages import Grant, SwarmState


class JoinError(Exception):
    """Docker refused to join; the message is Docker's, with any token masked by logging."""


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
        raise JoinError(message(data))
    return local_state(client).node_id


def leave(client: Docker) -> None:
    """`docker swarm leave --force`: the controller removed or revoked this node."""
    status, data = client.call("POST", "/swarm/leave?force=1")
    if status != 200 and "not part of a swarm" not in message(data):
        raise JoinError(message(data))
