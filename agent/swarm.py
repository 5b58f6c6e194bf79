"""The Pi's own Docker daemon: what swarm it is in, and joining one."""

from __future__ import annotations

import docker
import docker.errors

from agent.wire.messages import Grant, SwarmState


class JoinError(Exception):
    """Docker refused to join; the message is Docker's, with any token masked by logging."""


def connect(docker_host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, timeout=60)


def local_state(client: docker.DockerClient) -> SwarmState:
    swarm = client.info()["Swarm"]
    cluster = (swarm.get("Cluster") or {}).get("ID", "")
    return SwarmState(node_id=swarm.get("NodeID", ""), state=swarm.get("LocalNodeState", ""),
                      manager=bool(swarm.get("ControlAvailable")), cluster_id=cluster)


def docker_version(client: docker.DockerClient) -> str:
    return str(client.version().get("Version", ""))[:32]


def join(client: docker.DockerClient, grant: Grant, advertise_addr: str) -> str:
    """`docker swarm join` with the granted worker token; returns this node's id."""
    try:
        client.swarm.join(remote_addrs=grant.managers, join_token=grant.join_token,
                          advertise_addr=advertise_addr or None, listen_addr="0.0.0.0:2377")
    except docker.errors.APIError as exc:
        raise JoinError(str(exc.explanation or exc)) from None
    return local_state(client).node_id


def leave(client: docker.DockerClient) -> None:
    """`docker swarm leave --force`: the controller removed or revoked this node."""
    try:
        client.swarm.leave(force=True)
    except docker.errors.APIError as exc:
        if "not part of a swarm" not in str(exc):
            raise JoinError(str(exc.explanation or exc)) from None
