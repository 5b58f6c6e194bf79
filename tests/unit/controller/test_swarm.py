"""Swarm.update_node: one node spec update under the version it was read at."""

from __future__ import annotations

from typing import Any

import pytest

import controller.swarm as swarm_module
from controller.dockerapi import APIError, DockerError, NotFound
from controller.swarm import Swarm, SwarmError

from .baseline.fakedocker import out_of_sequence


class FakeApi:
    """Node n1 as Docker's API keeps it: a spec under a version, updated under it."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] = {"Role": "worker", "Labels": {}}
        self.version = 1
        self.refuse: APIError | DockerError | None = None
        self.reads = 0
        self.race = 0  # the next n reads are overtaken by another writer before updating

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        if node_id != "n1":
            raise NotFound(404, "node not found")
        self.reads += 1
        node = {"ID": "n1", "Version": {"Index": self.version}, "Spec": dict(self.spec)}
        if self.race:
            self.race -= 1
            self.version += 1
        return node

    def update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        if self.refuse is not None:
            raise self.refuse
        if version != self.version:
            raise out_of_sequence()
        self.spec, self.version = spec, self.version + 1

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"Managers": 3}}


def promote(attrs: dict[str, Any]) -> dict[str, Any] | None:
    if attrs["Spec"]["Role"] != "worker":
        return None
    return {**attrs["Spec"], "Role": "manager"}


def test_written_under_its_version_and_retried_when_overtaken() -> None:
    api = FakeApi()
    api.race = 2
    assert Swarm(api).update_node("n1", promote)  # type: ignore[arg-type]
    assert api.spec["Role"] == "manager" and api.reads == 3
    assert not Swarm(api).update_node("n1", promote)  # type: ignore[arg-type]
    assert api.version == 4  # nothing written the second time


def test_errors_in_plain_words() -> None:
    api = FakeApi()
    with pytest.raises(SwarmError) as err:
        Swarm(api).update_node("gone", promote)  # type: ignore[arg-type]
    assert err.value.code == "node_not_in_swarm"
    api.refuse = APIError(
        500, "rpc error: code = Unknown desc = The swarm does not have a leader")
    with pytest.raises(SwarmError) as err:
        Swarm(api).update_node("n1", promote)  # type: ignore[arg-type]
    assert err.value.code == "quorum_lost"
    api.race = 10
    api.refuse = None
    with pytest.raises(SwarmError) as err:
        Swarm(api).update_node("n1", promote)  # type: ignore[arg-type]
    assert err.value.code == "swarm_update_failed" and "kept changing" in err.value.message


class ManagerList:
    """api.nodes(filters={"role": "manager"}) of a swarm whose PiLike-01 just died."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.listed = nodes

    def nodes(self, filters: Any = None) -> list[dict[str, Any]]:
        return self.listed


def manager(addr: str, state: str = "ready", reachability: str = "reachable") -> dict[str, Any]:
    return {"Status": {"State": state},
            "ManagerStatus": {"Addr": addr, "Reachability": reachability}}


def test_grants_name_this_manager_first_and_never_a_down_one() -> None:
    swarm = Swarm(ManagerList([  # type: ignore[arg-type]
        manager("198.18.0.11:2377", state="down"),  # still "reachable" for a moment
        manager("198.18.0.19:2377"), manager("198.18.0.12:2377"),
        manager("198.18.0.13:2377", reachability="unreachable")]))
    assert swarm.manager_addresses(first="198.18.0.19:2377") == [
        "198.18.0.19:2377", "198.18.0.12:2377"]


class DownApi:
    """A daemon that does not answer (restarting, or stopped): every call fails so."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            raise DockerError("cannot connect to unix:///run/docker.sock "
                              "(ConnectionRefusedError)")
        return call


def test_a_daemon_that_does_not_answer_is_a_plain_503_never_a_crash() -> None:
    swarm = Swarm(DownApi())  # type: ignore[arg-type]
    for ask in (swarm.local, swarm.join_facts, swarm.manager_token, swarm.nodes,
                swarm.manager_addresses, lambda: swarm.node("n1"),
                swarm.rotate_worker_token, lambda: swarm.update_node("n1", promote)):
        with pytest.raises(SwarmError) as err:
            ask()
        assert (err.value.code, err.value.status) == ("docker_unavailable", 503)
        assert "does not answer" in err.value.message
        assert "docker.sock" not in err.value.message  # agents read it: no address
    api = FakeApi()  # the daemon goes away between the read and the write
    api.refuse = DockerError("cannot connect to unix:///run/docker.sock")
    with pytest.raises(SwarmError) as err:
        Swarm(api).update_node("n1", promote)  # type: ignore[arg-type]
    assert err.value.code == "docker_unavailable"


def test_only_the_daemons_own_word_makes_this_node_no_manager() -> None:
    """A manager whose daemon restarts is still one: is_manager cannot say (its controller
    keeps the CA key), where a daemon that answers "not a manager" makes it False."""
    with pytest.raises(SwarmError):
        Swarm(DownApi()).is_manager()  # type: ignore[arg-type]

    class Daemon:
        def __init__(self, state: str, manager: bool) -> None:
            self.state, self.manager = state, manager

        def info(self) -> dict[str, Any]:
            return {"Name": "pi-3", "Swarm": {"LocalNodeState": self.state,
                                              "ControlAvailable": self.manager}}
    assert Swarm(Daemon("active", False)).is_manager() is False  # type: ignore[arg-type]
    assert Swarm(Daemon("inactive", False)).is_manager() is False  # type: ignore[arg-type]
    for state in ("pending", "locked", "error"):  # a manager restarting, say: cannot say yet
        with pytest.raises(SwarmError) as err:
            Swarm(Daemon(state, False)).is_manager()  # type: ignore[arg-type]
        assert (err.value.code, err.value.status) == ("swarm_not_ready", 503)


def test_a_silent_daemon_is_logged_once_a_minute_not_once_a_request(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Strangers' requests reach the daemon too: their count must not set the log's size."""
    monkeypatch.setattr(swarm_module, "_warned", [-swarm_module.WARN_EVERY])
    swarm = Swarm(DownApi())  # type: ignore[arg-type]
    for _ in range(5):
        with pytest.raises(SwarmError):
            swarm.local()
    assert [r.levelname for r in caplog.records if "does not answer" in r.message] == [
        "WARNING"]
