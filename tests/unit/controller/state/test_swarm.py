"""Which config events the swarm backend reads back: other writers' only (pure logic; the
store itself is tested against real managers in tests/deploy/test_swarm_state.py)."""

from __future__ import annotations

from typing import Any

import controller.state.swarm as swarm_module
from controller.state.swarm import SwarmBackend, config_name


class Api:
    """Just what create/update call, answering as Docker does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        self.calls.append("create")
        return {"ID": "cfg1"}

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _post_json(self, url: str, data: Any, params: Any) -> object:
        self.calls.append("update")
        return object()

    def _raise_for_status(self, response: object) -> None:
        pass

    def configs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("read")
        return []


def event(action: str = "update", config_id: str = "cfg1") -> dict[str, Any]:
    return {"Type": "config", "Action": action,
            "Actor": {"ID": config_id, "Attributes": {"name": config_name("host/pi-1")}}}


def flushed(backend: SwarmBackend) -> None:
    flusher = backend._flusher
    if flusher is not None:
        flusher.join(timeout=5)


def test_our_writes_cost_one_call_and_their_events_no_read() -> None:
    api = Api()
    backend = SwarmBackend(api)
    created = backend.create("host/pi-1", {"hostname": "pi-1"})
    backend.update(created, {"hostname": "pi-1", "records": []})
    assert api.calls == ["create", "update"]  # no read of what we wrote
    heard: list[str] = []
    for action in ("create", "update"):
        backend._event(event(action), lambda key, stored: heard.append(key))
    assert backend._dirty == set() and heard == []
    backend._stop.set()  # the read of another's write happens at once
    backend._event(event("update"), lambda key, stored: heard.append(key))  # another's
    flushed(backend)
    assert api.calls == ["create", "update", "read"]


def test_an_event_of_ours_not_heard_in_time_is_no_longer_expected(monkeypatch: Any) -> None:
    backend = SwarmBackend(Api())
    backend.create("host/pi-1", {"hostname": "pi-1"})
    monkeypatch.setattr(swarm_module, "OWN_EVENT_WAIT", 0.0)
    backend._stop.set()
    backend._event(event("create"), lambda key, stored: None)
    flushed(backend)
    assert backend.api.calls == ["create", "read"]
