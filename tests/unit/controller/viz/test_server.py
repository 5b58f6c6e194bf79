"""The viz socket served for real: cheroot on a unix socket in a temp dir, asking a fake
Docker daemon on another unix socket through the Docker SDK (the plumbing a manager has)."""

from __future__ import annotations

import json
import socketserver
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from controller.dockerapi import DockerAPI
from controller.viz.server import VizSocket, docker_fetch
from tests.unixhttp import raw_exchange, request

from .dockerjson import ANSWERS, SECRETS, SWARM

UPSTREAM = {**{f"/{name}": answer for name, answer in ANSWERS.items()}, "/swarm": SWARM}


class FakeDocker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers like a manager's dockerd, secrets included; records every request."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.seen: list[str] = []
        self.down = False
        super().__init__(str(path), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: FakeDocker

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        if self.server.down:
            self.send_response(500)
            body = b'{"message":"rpc error: This node is not a swarm manager."}'
        else:
            answer = UPSTREAM.get(self.path)
            self.send_response(200 if answer is not None else 404)
            body = json.dumps(answer if answer is not None else {"message": "page not found"}
                              ).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDocker]:
    fake = FakeDocker(tmp_path_factory.mktemp("docker") / "dockerd.sock")
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


@pytest.fixture
def upstream(served_upstream: FakeDocker) -> FakeDocker:
    served_upstream.seen.clear()
    served_upstream.down = False
    return served_upstream


def start(directory: Path, upstream: FakeDocker, cache_seconds: float = 0.0) -> VizSocket:
    api = DockerAPI(f"unix://{upstream.server_address}", timeout=10)
    viz = VizSocket(directory, docker_fetch(api), cache_seconds=cache_seconds)
    viz.start()
    return viz


@pytest.fixture(scope="module")
def served_viz(tmp_path_factory: pytest.TempPathFactory,
               served_upstream: FakeDocker) -> Iterator[VizSocket]:
    served = start(tmp_path_factory.mktemp("viz") / "run" / "docker-ro", served_upstream)
    yield served
    served.stop()


@pytest.fixture
def viz(served_viz: VizSocket, upstream: FakeDocker) -> VizSocket:
    return served_viz  # uncached, so each request asks the (freshly reset) upstream


def test_socket_is_docker_sock_in_its_own_directory(viz: VizSocket) -> None:
    assert viz.path == viz.directory / "docker.sock"
    assert stat.S_ISSOCK(viz.path.stat().st_mode)
    assert stat.S_IMODE(viz.path.stat().st_mode) == 0o666
    assert stat.S_IMODE(viz.directory.stat().st_mode) == 0o755


@pytest.mark.parametrize("target", ["/nodes", "/services", "/tasks", "/v1.24/nodes"])
def test_allowed_answers_are_docker_s_list_without_secrets(
        viz: VizSocket, upstream: FakeDocker, target: str) -> None:
    status, body = request(viz.path, target)
    endpoint = target.rsplit("/", 1)[1]
    assert status == 200
    assert [item["ID"] for item in body] == [item["ID"] for item in ANSWERS[endpoint]]
    assert [s for s in SECRETS if s in json.dumps(body)] == []
    assert upstream.seen == [f"/{endpoint}"]  # asked with the controller's own client


@pytest.mark.parametrize(("method", "target"), [
    ("GET", "/swarm"), ("GET", "/v1.41/swarm"), ("GET", "/secrets"), ("GET", "/configs"),
    ("GET", "/containers/json"), ("GET", "/containers/abc/archive?path=/etc"),
    ("GET", "/exec/x/json"), ("GET", "/info"), ("GET", "/tasks?filters=%7B%7D"),
    ("GET", "/tasks%3Ffilters=x"), ("GET", "/nodes%2F..%2Fswarm"), ("GET", "/%2e%2e/swarm"),
    ("GET", "/nodes/../swarm"), ("GET", "/v1.41/../swarm"),
    ("POST", "/nodes"), ("POST", "/swarm/init"), ("PUT", "/nodes"), ("DELETE", "/services/x"),
    ("POST", "/swarm/update?rotateWorkerToken=true"), ("HEAD", "/nodes"),
])
def test_everything_else_is_403_and_never_reaches_docker(
        viz: VizSocket, upstream: FakeDocker, method: str, target: str) -> None:
    status, body = request(viz.path, target, method)
    assert status == 403
    if method != "HEAD":
        assert body["error"] == "forbidden" and body["message"]
    assert upstream.seen == []


@pytest.mark.parametrize("raw", [
    b"GET /nodes\n HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://localhost/swarm HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET //nodes HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nodes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
    b"GET /nodes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
])
def test_malformed_or_oversized_requests_get_no_data(
        viz: VizSocket, upstream: FakeDocker, raw: bytes) -> None:
    answer = raw_exchange(viz.path, raw)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b""
    assert status == b"" or status.startswith(b"4"), answer[:200]
    assert b"24ifsmvkjbyhk" not in answer and upstream.seen == []


def test_docker_failing_is_a_502_that_says_so(viz: VizSocket, upstream: FakeDocker) -> None:
    upstream.down = True
    status, body = request(viz.path, "/nodes")
    assert status == 502 and body["error"] == "docker_unavailable"


def test_docker_is_asked_once_per_cache_period(tmp_path: Path, upstream: FakeDocker) -> None:
    served = start(tmp_path / "cached", upstream, cache_seconds=3600)
    try:
        for _ in range(5):
            assert request(served.path, "/nodes")[0] == 200
            assert request(served.path, "/v1.41/tasks")[0] == 200
    finally:
        served.stop()
    assert upstream.seen == ["/nodes", "/tasks"]


def test_a_restarted_server_serves_the_same_path_again(tmp_path: Path,
                                                      upstream: FakeDocker) -> None:
    directory = tmp_path / "docker-ro"
    first = start(directory, upstream)
    inode = directory.stat().st_ino
    first.stop()
    assert not first.path.exists()  # stopped: no stale socket left behind
    (directory / "docker.sock").touch()  # or a crash left one: it is replaced
    second = start(directory, upstream)
    try:
        assert directory.stat().st_ino == inode  # the directory viz binds is kept
        assert request(second.path, "/nodes")[0] == 200
    finally:
        second.stop()
