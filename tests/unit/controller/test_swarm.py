"""Swarm.update_node: one node spec update under the version it was read at."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from controller.swarm import Swarm, SwarmError

from .baseline.fakedocker import out_of_sequence


class FakeNode:
    def __init__(self, store: FakeNodes) -> None:
        self.store = store
        self.attrs = {"ID": "n1", "Version": {"Index": store.version},
                      "Spec": dict(store.spec)}

    def update(self, spec: dict[str, Any]) -> None:
        if self.store.refuse is not None:
            raise self.store.refuse
        if self.attrs["Version"]["Index"] != self.store.version:
            raise out_of_sequence()
        self.store.spec, self.store.version = spec, self.store.version + 1


class FakeNodes:
    def __init__(self) -> None:
        self.spec: dict[str, Any] = {"Role": "worker", "Labels": {}}
        self.version = 1
        self.refuse: docker.errors.APIError | None = None
        self.reads = 0
        self.race = 0  # the next n reads are overtaken by another writer before updating

    def get(self, node_id: str) -> FakeNode:
        if node_id != "n1":
            raise docker.errors.NotFound("404", explanation="node not found")
        self.reads += 1
        node = FakeNode(self)
        if self.race:
            self.race -= 1
            self.version += 1
        return node


class FakeClient:
    def __init__(self) -> None:
        self.nodes = FakeNodes()

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"Managers": 3}}


def promote(attrs: dict[str, Any]) -> dict[str, Any] | None:
    if attrs["Spec"]["Role"] != "worker":
        return None
    return {**attrs["Spec"], "Role": "manager"}


def test_written_under_its_version_and_retried_when_overtaken() -> None:
    client = FakeClient()
    client.nodes.race = 2
    assert Swarm(client).update_node("n1", promote)  # type: ignore[arg-type]
    assert client.nodes.spec["Role"] == "manager" and client.nodes.reads == 3
    assert not Swarm(client).update_node("n1", promote)  # type: ignore[arg-type]
    assert client.nodes.version == 4  # nothing written the second time


def test_errors_in_plain_words() -> None:
    client = FakeClient()
    with pytest.raises(SwarmError) as err:
        Swarm(client).update_node("gone", promote)  # type: ignore[arg-type]
    assert err.value.code == "node_not_in_swarm"
    client.nodes.refuse = docker.errors.APIError(
        "500", explanation="rpc error: code = Unknown desc = The swarm does not have a leader")
    with pytest.raises(SwarmError) as err:
        Swarm(client).update_node("n1", promote)  # type: ignore[arg-type]
    assert err.value.code == "quorum_lost"
    client.nodes.race = 10
    client.nodes.refuse = None
    with pytest.raises(SwarmError) as err:
        Swarm(client).update_node("n1", promote)  # type: ignore[arg-type]
    assert err.value.code == "swarm_update_failed" and "kept changing" in err.value.message


class ManagerList:
    """client.nodes.list(filters={"role": "manager"}) of a swarm whose PiLike-01 just died."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes

    def list(self, filters: Any = None) -> list[Any]:
        return [type("Node", (), {"attrs": n}) for n in self.nodes]


def manager(addr: str, state: str = "ready", reachability: str = "reachable") -> dict[str, Any]:
    return {"Status": {"State": state},
            "ManagerStatus": {"Addr": addr, "Reachability": reachability}}


def test_grants_name_this_manager_first_and_never_a_down_one() -> None:
    swarm = Swarm.__new__(Swarm)
    swarm.client = type("Client", (), {"nodes": ManagerList([
        manager("198.18.0.11:2377", state="down"),  # still "reachable" for a moment
        manager("198.18.0.19:2377"), manager("198.18.0.12:2377"),
        manager("198.18.0.13:2377", reachability="unreachable")])})()
    assert swarm.manager_addresses(first="198.18.0.19:2377") == [
        "198.18.0.19:2377", "198.18.0.12:2377"]
