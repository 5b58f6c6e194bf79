"""The viz socket's allow-list and scrubbing, as pure logic (the server is test_server's)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.viz.filter import Refused, route, scrub

from .dockerjson import ANSWERS, NODES, SECRETS, SERVICES, TASKS

ALLOWED = [
    ("/nodes", "nodes"), ("/services", "services"), ("/tasks", "tasks"),
    ("/v1.41/nodes", "nodes"), ("/v1.24/services", "services"), ("/v1.43/tasks", "tasks"),
]

REFUSED_TARGETS = [
    "/swarm", "/v1.41/swarm", "/swarm/unlockkey", "/secrets", "/v1.41/secrets",
    "/secrets/s1", "/configs", "/configs/c1", "/containers/json", "/v1.41/containers/json",
    "/containers/abc/json", "/containers/abc/archive?path=/etc",
    "/containers/abc/export", "/containers/abc/logs?stdout=1", "/exec/x/json",
    "/info", "/_ping", "/version", "/events", "/images/json", "/volumes", "/networks",
    "/plugins", "/system/df", "/distribution/nginx/json", "/session",
    "/nodes/24ifsmvkjbyhk", "/services/app", "/tasks/0kzzo1i0y4jz", "/tasks/x/logs",
    "/services/app/logs?stdout=1",
    # query strings: the visualizer sends none
    "/nodes?", "/tasks?filters=%7B%7D", "/services?insertDefaults=true", "/nodes#x",
    # paths that a decoder or Docker's router would turn into something else
    "/tasks%3Ffilters=x", "/%6eodes", "/nodes%2F..%2Fswarm", "/nodes/../swarm",
    "/v1.41/../swarm", "/./nodes", "//nodes", "/nodes/", "/nodes/.", "/%2e%2e/swarm",
    "/nodes%00", "/nodes\n", "/nodes ", " /nodes", "/NODES", "/Nodes",
    # versions
    "/v1.41/v1.41/nodes", "/v1/nodes", "/v1.41nodes", "/vx.y/nodes", "/v1.41/",
    # other forms of the request line
    "", "*", "nodes", "http://localhost/nodes", "//localhost/nodes", "/apis/nodes",
]


@pytest.mark.parametrize(("target", "endpoint"), ALLOWED)
def test_the_visualizers_requests_are_answered(target: str, endpoint: str) -> None:
    assert route("GET", target) == endpoint


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_every_other_path_is_refused(target: str) -> None:
    with pytest.raises(Refused, match="only GET /nodes, /services and /tasks"):
        route("GET", target)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                                    "CONNECT", "get", "GET "])
@pytest.mark.parametrize("target", ["/nodes", "/v1.41/services", "/swarm/init",
                                    "/containers/create", "/swarm/update?rotateWorkerToken=1"])
def test_every_other_method_is_refused(method: str, target: str) -> None:
    with pytest.raises(Refused, match="read-only"):
        route(method, target)


@pytest.mark.parametrize("endpoint", sorted(ANSWERS))
def test_allowed_answers_hold_no_secret(endpoint: str) -> None:
    text = json.dumps(scrub(endpoint, ANSWERS[endpoint]))
    assert [s for s in SECRETS if s in text] == []


def get(value: Any, path: str) -> Any:
    for key in path.split("."):
        value = value[key]
    return value


# What src/utils/request.js and src/data-provider.js read to draw the picture.
DRAWN = {
    "nodes": ["ID", "Status.State", "Description.Hostname", "Spec.Role", "Spec.Labels",
              "Description.Resources.MemoryBytes", "Description.Platform.Architecture",
              "Description.Platform.OS"],
    "tasks": ["ID", "NodeID", "ServiceID", "DesiredState", "UpdatedAt", "Status.State",
              "Status.ContainerStatus.ContainerID", "Spec.ContainerSpec.Image"],
    "services": ["ID", "Spec.Name"],
}


@pytest.mark.parametrize("endpoint", sorted(DRAWN))
def test_what_the_visualizer_draws_is_kept(endpoint: str) -> None:
    before, after = ANSWERS[endpoint], scrub(endpoint, ANSWERS[endpoint])
    assert len(after) == len(before)
    for original, kept in zip(before, after, strict=True):
        for path in DRAWN[endpoint]:
            assert get(kept, path) == get(original, path), path


def test_the_picture_as_it_comes_out() -> None:
    node = scrub("nodes", NODES)[0]
    assert node == {
        "ID": "24ifsmvkjbyhk4ty1m3c3eo3w", "Version": {"Index": 8},
        "CreatedAt": NODES[0]["CreatedAt"], "UpdatedAt": NODES[0]["UpdatedAt"],
        "Spec": {"Labels": {"pi.model": "zero-w"}, "Role": "manager", "Availability": "active"},
        "Description": {"Hostname": "PiLike-01",
                        "Platform": {"Architecture": "armv6l", "OS": "linux"},
                        "Resources": {"NanoCPUs": 1000000000, "MemoryBytes": 450859008},
                        "Engine": {"EngineVersion": "20.10.24"}},
        "Status": {"State": "ready", "Addr": "198.18.0.11"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable",
                          "Addr": "198.18.0.11:2377"},
    }
    assert scrub("services", SERVICES)[1]["Spec"] == {
        "Name": "viz", "Mode": {"Global": {}},
        "TaskTemplate": {"ContainerSpec": {"Image": "dockersamples/visualizer:latest"}}}
    task = scrub("tasks", TASKS)[0]
    assert set(task["Spec"]) == {"ContainerSpec"} and set(task["Spec"]["ContainerSpec"]) == \
        {"Image"}


@pytest.mark.parametrize(("answer", "expected"), [
    ({"message": "This node is not a swarm manager."}, []),  # an error object, not a list
    (None, []),
    (["not an object", 3, None], []),
    ([{"ID": {"nested": "sk_live_x"}, "Spec": "a string", "Description": []}], [{}]),
    ([{"Spec": {"Labels": {"ok": "yes", "bad": {"nested": "sk_live_x"}, "n": 3}}}],
     [{"Spec": {"Labels": {"ok": "yes"}}}]),
])
def test_unexpected_shapes_are_dropped_not_passed_on(answer: Any, expected: Any) -> None:
    assert scrub("nodes", answer) == expected
