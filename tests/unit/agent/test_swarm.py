"""The agent's Docker client against a real HTTP server on a unix socket that answers as
Docker does (and, on purpose, as Docker does not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.dockerapi import MAX_ANSWER
from agent.swarm import (
    DockerError,
    JoinError,
    connect,
    docker_version,
    join,
    leave,
    local_state,
)
from agent.wire.messages import Grant

from .scripted import unix_http

TOKEN = "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25
INFO = {"Swarm": {"NodeID": "n" * 25, "LocalNodeState": "active", "ControlAvailable": False,
                  "Cluster": {"ID": "c" * 25}}}


def _json(status: int, data: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _grant() -> Grant:
    return Grant(hostname="pi-1", agent="t", role="worker", join_token=TOKEN,
                 managers=["10.0.0.2:2377"], labels={}, cluster="c" * 25, enrollment="e",
                 iat=0, exp=0)


def test_state_and_version_are_read_from_info_and_version(tmp_path: Path) -> None:
    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        return _json(200, INFO if path == "/info" else {"Version": "24.0.7"})

    with unix_http(tmp_path / "d.sock", docker):
        client = connect(f"unix://{tmp_path / 'd.sock'}")
        state = local_state(client)
        assert (state.node_id, state.state, state.manager, state.cluster_id) == (
            "n" * 25, "active", False, "c" * 25)
        assert docker_version(client) == "24.0.7"


def test_join_sends_the_grant_and_returns_the_node_id(tmp_path: Path) -> None:
    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        return _json(200, INFO) if path == "/info" else (200, {}, b"")

    with unix_http(tmp_path / "d.sock", docker) as seen:
        assert join(connect(f"unix://{tmp_path / 'd.sock'}"), _grant(), "10.0.0.21") == "n" * 25
    method, path, headers, body = seen.requests[0]
    assert (method, path, headers["content-type"]) == ("POST", "/swarm/join", "application/json")
    assert json.loads(body) == {"ListenAddr": "0.0.0.0:2377", "RemoteAddrs": ["10.0.0.2:2377"],
                                "JoinToken": TOKEN, "AdvertiseAddr": "10.0.0.21"}


def test_a_refused_join_says_dockers_message_not_the_token(tmp_path: Path) -> None:
    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        return _json(500, {"message": "rpc error: could not connect to 10.0.0.2:2377"})

    with unix_http(tmp_path / "d.sock", docker), pytest.raises(JoinError) as err:
        join(connect(f"unix://{tmp_path / 'd.sock'}"), _grant(), "")
    assert "could not connect" in str(err.value)
    assert TOKEN not in str(err.value)


def test_leave_is_forced_and_not_being_in_a_swarm_is_fine(tmp_path: Path) -> None:
    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        return _json(503, {"message": "This node is not part of a swarm"})

    with unix_http(tmp_path / "d.sock", docker) as seen:
        leave(connect(f"unix://{tmp_path / 'd.sock'}"))
    assert seen.requests[0][:2] == ("POST", "/swarm/leave?force=1")


def test_a_failed_leave_is_a_join_error(tmp_path: Path) -> None:
    def docker(method: str, path: str, headers: dict, body: bytes) -> Any:
        return _json(500, {"message": "context deadline exceeded"})

    with unix_http(tmp_path / "d.sock", docker), pytest.raises(JoinError, match="deadline"):
        leave(connect(f"unix://{tmp_path / 'd.sock'}"))


@pytest.mark.parametrize("answer", [
    (200, {}, b"<html>not docker</html>"),  # not JSON
    (200, {}, b"[]"),  # JSON, not an object
    _json(200, {"ID": "x"}),  # no Swarm section
    _json(200, {"Swarm": "active"}),  # a Swarm section that is no object
    _json(500, {"message": "starting"}),  # an error
    (200, {}, b'{"Swarm": {}, "pad": "' + b"x" * MAX_ANSWER + b'"}'),  # oversized
])
def test_an_answer_that_is_not_dockers_is_a_docker_error(tmp_path: Path, answer: Any) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: answer), pytest.raises(DockerError):
        local_state(connect(f"unix://{tmp_path / 'd.sock'}"))


def test_no_daemon_is_a_docker_error(tmp_path: Path) -> None:
    with pytest.raises(DockerError):
        local_state(connect(f"unix://{tmp_path / 'absent.sock'}"))


def test_a_docker_host_that_is_no_socket_url_is_refused() -> None:
    with pytest.raises(DockerError, match="docker_host"):
        connect("ssh://pi@10.0.0.2")
