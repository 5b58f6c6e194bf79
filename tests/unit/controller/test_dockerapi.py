"""The controller's Docker API client against a real HTTP server on a unix socket that
answers as Docker does (the calls themselves run against real dockerds in the lab tests:
tests/deploy/test_swarm_state.py, tests/e2e)."""

from __future__ import annotations

import base64
import contextlib
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.dockerapi import MAX_ANSWER
from controller.dockerapi import APIError, DockerAPI, DockerError, NotFound, no_leader
from controller.state.swarm import _is_unavailable

from ..agent.scripted import unix_http


def _json(status: int, data: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


def _query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


def test_filters_and_versions_go_in_the_query_as_docker_reads_them(tmp_path: Path) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: _json(200, [])) as seen:
        api = DockerAPI(f"unix://{tmp_path / 'd.sock'}")
        assert api.configs(filters={"label": ["swarm-enroll.state"]}) == []
        api.update_config("swarm-enroll-abc", 41, {"Name": "swarm-enroll-abc", "Labels": {}})
        api.update_node("n/1", 7, {"Role": "manager"})
        api.remove_node("n1", force=True)
        api.nodes(filters={"role": "manager"})
    (m1, p1, _, _), (m2, p2, _, b2), (_, p3, _, _), (m4, p4, _, _), (_, p5, _, _) = \
        seen.requests
    assert (m1, urlsplit(p1).path) == ("GET", "/configs")
    assert json.loads(_query(p1)["filters"][0]) == {"label": ["swarm-enroll.state"]}
    assert (m2, urlsplit(p2).path, _query(p2)) == (
        "POST", "/configs/swarm-enroll-abc/update", {"version": ["41"]})
    assert json.loads(b2) == {"Name": "swarm-enroll-abc", "Labels": {}}
    assert urlsplit(p3).path == "/nodes/n%2F1/update"  # a reference never escapes its path
    assert (m4, urlsplit(p4).path, _query(p4)) == ("DELETE", "/nodes/n1", {"force": ["1"]})
    assert json.loads(_query(p5)["filters"][0]) == {"role": ["manager"]}  # a list, always


def test_a_config_is_created_with_its_data_in_base64(tmp_path: Path) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: _json(201, {"ID": "cfg1"})) as seen:
        api = DockerAPI(f"unix://{tmp_path / 'd.sock'}")
        assert api.create_config("c", b"\x00data", {"k": "v"}) == {"ID": "cfg1"}
    body = json.loads(seen.requests[0][3])
    assert base64.b64decode(body["Data"]) == b"\x00data" and body["Labels"] == {"k": "v"}


def test_rotating_the_worker_token_sends_the_swarms_own_spec_back(tmp_path: Path) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: (200, {}, b"")) as seen:
        DockerAPI(f"unix://{tmp_path / 'd.sock'}").update_swarm(
            12, {"Raft": {"SnapshotInterval": 500}}, rotate_worker_token=True)
    _, path, _, body = seen.requests[0]
    assert _query(path) == {"version": ["12"], "rotateWorkerToken": ["true"]}
    assert json.loads(body) == {"Raft": {"SnapshotInterval": 500}}  # not reset to defaults


@pytest.mark.parametrize(("answer", "error", "words"), [
    (_json(404, {"message": "config x not found"}), NotFound, "config x not found"),
    (_json(500, {"message": "rpc error: update out of sequence"}), APIError, "out of sequence"),
    ((503, {}, b"This node is not a swarm manager."), APIError, "not a swarm manager"),
])
def test_dockers_errors_carry_its_status_and_words(tmp_path: Path, answer: Any, error: Any,
                                                   words: str) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: answer), pytest.raises(error) as caught:
        DockerAPI(f"unix://{tmp_path / 'd.sock'}").inspect_config("x")
    assert caught.value.status_code == answer[0] and words in caught.value.explanation


def test_no_daemon_is_a_docker_error(tmp_path: Path) -> None:
    with pytest.raises(DockerError):
        DockerAPI(f"unix://{tmp_path / 'absent.sock'}").info()


def test_a_listing_far_larger_than_the_agents_limit_is_read(tmp_path: Path) -> None:
    """5,000 state documents list to ~20 MB: the agent's 1 MB cap is not the controller's."""
    configs = [{"ID": f"c{i}", "Spec": {"Labels": {"doc": "x" * 1000}}} for i in range(3000)]
    with unix_http(tmp_path / "d.sock", lambda *_: _json(200, configs)):
        listed = DockerAPI(f"unix://{tmp_path / 'd.sock'}").configs()
    assert len(json.dumps(listed)) > 3 * MAX_ANSWER and listed == configs


class _Events(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Streams two events the way dockerd does (chunked, one JSON object per line), then
    holds the stream open as dockerd does until something happens."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.release = threading.Event()
        super().__init__(str(path), _EventsHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, _ = super().get_request()
        return sock, ("unix", 0)


class _EventsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for action in ("create", "update"):
            line = json.dumps({"Type": "config", "Action": action}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()
        self.server.release.wait(10)  # type: ignore[attr-defined]

    def log_message(self, *_: Any) -> None:
        pass


def test_events_stream_line_by_line_and_close_wakes_the_reader(tmp_path: Path) -> None:
    server = _Events(tmp_path / "d.sock")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stream = DockerAPI(f"unix://{tmp_path / 'd.sock'}").events(filters={"type": ["config"]})
        heard: list[str] = []
        ended = threading.Event()

        def read() -> None:
            with contextlib.suppress(DockerError):
                heard.extend(event["Action"] for event in stream)
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        threading.Timer(0.5, stream.close).start()
        assert ended.wait(5), "close() did not end the stream"
        assert heard == ["create", "update"]
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("said", "lost", "store_down"), [
    ("rpc error: code = Unknown desc = The swarm does not have a leader", True, True),
    ("rpc error: code = Unknown desc = raft: no elected cluster leader", True, True),
    ("rpc error: code = FailedPrecondition desc = raft: can't remove member from the raft: "
     "this would result in a loss of quorum", False, False),
    ("rpc error: code = DeadlineExceeded desc = context deadline exceeded", False, True),
    ("rpc error: code = Unavailable desc = lost leader", False, True),
    ("This node is not a swarm manager.", False, True),
    ("rpc error: code = InvalidArgument desc = config name must be valid", False, False),
])
def test_no_leader_is_told_apart_from_an_election_and_from_refusals(
        said: str, lost: bool, store_down: bool) -> None:
    """Node changes call only a leaderless swarm a lost quorum (its message tells the admin
    to force a new cluster); the store cannot be used while there is no leader, during an
    election or on a node no longer a manager, but a refusal is Docker's answer."""
    assert no_leader(APIError(500, said)) is lost
    assert _is_unavailable(APIError(500, said)) is store_down


def test_the_controller_keeps_its_connections_to_docker_for_the_next_calls(
        tmp_path: Path) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: _json(200, [])) as seen:
        api = DockerAPI(f"unix://{tmp_path / 'd.sock'}")
        for _ in range(5):
            assert api.configs() == []
    assert (len(seen.requests), seen.connections) == (5, 1)


def test_a_kept_connection_the_daemon_closed_is_replaced_once(tmp_path: Path) -> None:
    """The daemon restarted: the call is made again on a new connection, and it counts."""
    def script(method: str, path: str, *_: Any) -> tuple[int, dict[str, str], bytes]:
        return (0, {}, b"") if len(seen.requests) == 2 else _json(200, {"ID": "n1"})

    with unix_http(tmp_path / "d.sock", script) as seen:
        api = DockerAPI(f"unix://{tmp_path / 'd.sock'}")
        assert api.info() == {"ID": "n1"}
        assert api.info() == {"ID": "n1"}  # its kept connection hung up: asked anew
    assert (len(seen.requests), seen.connections) == (3, 2)


def test_a_new_connection_that_fails_is_not_tried_again(tmp_path: Path) -> None:
    with unix_http(tmp_path / "d.sock", lambda *_: (0, {}, b"")) as seen:
        api = DockerAPI(f"unix://{tmp_path / 'd.sock'}")
        with pytest.raises(DockerError):
            api.info()
    assert (len(seen.requests), seen.connections) == (1, 1)
