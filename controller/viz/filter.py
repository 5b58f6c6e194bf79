"""Which requests the visualizer may make, and what of Docker's answer it may see.

What the Docker Swarm Visualizer asks for (dockersamples/docker-swarm-visualizer; the
ARM image alexellis2/visualizer-arm is built from alexellis/docker-swarm-visualizer, the
same code):

- `server.js` answers `GET /apis/*` by sending `GET '/' + req.params[0]` to the socket
  `/var/run/docker.sock` (hard-coded; `DOCKER_HOST` would switch to TCP). Express decodes
  the parameter, so `/apis/%2e%2e/...` or `/apis/tasks%3Ffilters=...` reach Docker as
  `/../...` and `/tasks?filters=...`: every request line here is matched as sent, raw.
- `src/data-provider.js` polls, at start and every `MS` milliseconds, `getAllNodes`,
  `getAllTasks` and `getAllServices` of `src/utils/request.js`, which fetch `apis/nodes`,
  `apis/tasks` and `apis/services`: no API version prefix, no query string.
  `getAllContainers` (`containers/json`) and `getAllNetworks` are imported but never
  called; the `apis/containers/<id>/json` link it builds for tasks on managers is
  never fetched (its click handler is commented out in `src/vis-physical/index.js`).

So `GET /nodes`, `/services` and `/tasks` answer (also with a `/v1.NN/` prefix, as any
Docker client may send), and nothing else does. Each answer keeps only the fields the
client draws from: node name, role, labels, state, memory, platform; a task's node,
service, state, image and container id; a service's name and mode. Everything else is
dropped, never forwarded: service and task environment, secret and config references,
mounts, command arguments (the client shows them, but they can carry passwords), TLS
material (a node's `Description.TLSInfo`), engine plugins. Join tokens and CA keys live
in `GET /swarm`, which is refused like every other path.
"""

from __future__ import annotations

import re
from typing import Any

METHOD = "GET"
_TARGET = re.compile(r"/(?:v[0-9]{1,2}\.[0-9]{1,3}/)?(nodes|services|tasks)")

# Shapes: a mapping of the keys to keep, each to a shape of its own, SCALAR (a string,
# number, bool or null; anything else is dropped) or STRINGS (a mapping of strings to
# strings, such as labels).
SCALAR = "scalar"
STRINGS = "strings"
_VERSION = {"Index": SCALAR}
SHAPES: dict[str, dict[str, Any]] = {
    "nodes": {
        "ID": SCALAR, "Version": _VERSION, "CreatedAt": SCALAR, "UpdatedAt": SCALAR,
        "Spec": {"Name": SCALAR, "Role": SCALAR, "Availability": SCALAR, "Labels": STRINGS},
        "Description": {
            "Hostname": SCALAR,
            "Platform": {"Architecture": SCALAR, "OS": SCALAR},
            "Resources": {"NanoCPUs": SCALAR, "MemoryBytes": SCALAR},
            "Engine": {"EngineVersion": SCALAR},
        },
        "Status": {"State": SCALAR, "Addr": SCALAR},
        "ManagerStatus": {"Leader": SCALAR, "Reachability": SCALAR, "Addr": SCALAR},
    },
    "tasks": {
        "ID": SCALAR, "Version": _VERSION, "CreatedAt": SCALAR, "UpdatedAt": SCALAR,
        "ServiceID": SCALAR, "NodeID": SCALAR, "Slot": SCALAR, "DesiredState": SCALAR,
        "Spec": {"ContainerSpec": {"Image": SCALAR}},
        "Status": {"Timestamp": SCALAR, "State": SCALAR,
                   "ContainerStatus": {"ContainerID": SCALAR}},
    },
    "services": {
        "ID": SCALAR, "Version": _VERSION, "CreatedAt": SCALAR, "UpdatedAt": SCALAR,
        "Spec": {
            "Name": SCALAR,
            "Mode": {"Replicated": {"Replicas": SCALAR}, "Global": {}},
            "TaskTemplate": {"ContainerSpec": {"Image": SCALAR}},
        },
    },
}


class Refused(Exception):
    """Not a request the visualizer makes: answered 403 with this message."""


def route(method: str, target: str) -> str:
    """The endpoint (`nodes`, `services` or `tasks`) a raw request line asks for."""
    if method != METHOD:
        raise Refused(f"read-only: only GET is answered, not {method[:16]!r}")
    match = _TARGET.fullmatch(target)
    if match is None:
        raise Refused("only GET /nodes, /services and /tasks are answered (no query "
                      "string), for the swarm visualizer")
    return match.group(1)


def scrub(endpoint: str, answer: Any) -> list[dict[str, Any]]:
    """Docker's list answer for `endpoint`, with only the fields the visualizer draws."""
    shape = SHAPES[endpoint]
    if not isinstance(answer, list):
        return []
    return [_project(item, shape) for item in answer if isinstance(item, dict)]


def _project(value: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, sub in shape.items():
        if key not in value:
            continue
        item = value[key]
        if sub == SCALAR:
            if item is None or isinstance(item, str | int | float | bool):
                kept[key] = item
        elif sub == STRINGS:
            if isinstance(item, dict):
                kept[key] = {k: v for k, v in item.items()
                             if isinstance(k, str) and isinstance(v, str)}
        elif isinstance(item, dict):
            kept[key] = _project(item, sub)
    return kept
