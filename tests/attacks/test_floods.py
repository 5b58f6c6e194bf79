"""Floods from the LAN, over the real TLS server: fresh keys by the thousand, one name
claimed over and over, a bad token sent again and again. What they can make the controller
store is bounded, and said so with 429 and Retry-After."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.wire.errors import WireError
from controller.server import Connection

from .conftest import LiveController


def claim(live: LiveController, hostname: str, **fields: Any) -> int | tuple[int, int]:
    """One request with a fresh key: its status, or (429, Retry-After) when refused."""
    client = live.agent()
    try:
        answer = client.enroll({"hostname": hostname, "hardware_id": "00000000f00d", **fields})
        return 202 if answer["status"] == "pending" else 200
    except WireError as exc:
        return (exc.status, exc.retry_after)
    finally:
        client.close()


def flood(live: LiveController, hostnames: list[str], **fields: Any) -> Counter[Any]:
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda h: claim(live, h, **fields), hostnames))


def records(live: LiveController) -> list[Any]:
    return [r for d in live.state.state.hosts() for r in d.records]


def test_fresh_keys_from_one_address_are_capped(
        start_controller: Callable[..., LiveController]) -> None:
    live = start_controller(max_pending_per_source=10)
    outcomes = flood(live, [f"man-{i}" for i in range(60)])
    assert outcomes == Counter({202: 10, (429, 60): 50})
    assert len(records(live)) == 10


def test_one_name_claimed_over_and_over_is_capped(
        start_controller: Callable[..., LiveController]) -> None:
    live = start_controller()  # defaults: 8 claims of one name
    outcomes = flood(live, ["mgr-2"] * 300)
    assert outcomes == Counter({202: 8, (429, 60): 292})
    assert len(records(live)) == 8
    refused = live.admin("POST", "/v1/nodes/mgr-2/approve")
    assert refused.status_code == 409 and len(refused.json()["claimants"]) == 8


def test_names_no_rule_takes_store_nothing(live_controller: LiveController) -> None:
    outcomes = flood(live_controller, [f"other-{i}" for i in range(200)])
    assert outcomes == Counter({200: 200})  # "rejected", answered at once
    assert records(live_controller) == []


def test_a_bad_token_sent_again_and_again_is_one_audit_row(
        live_controller: LiveController) -> None:
    client = live_controller.agent()
    request = {"hostname": "tok-1", "hardware_id": "00000000f00d",
               "bootstrap_token": "seb_" + "x" * 43}
    try:
        for _ in range(30):
            assert client.enroll(request)["status"] == "pending"
    finally:
        client.close()
    events = live_controller.admin("GET", "/v1/audit",
                                   params={"action": "token.refused"}).json()["events"]
    assert len(events) == 1  # counted at most once a minute, never one row per request


def test_closed_connections_are_freed_at_once_not_left_to_the_garbage_collector(
        live_controller: LiveController) -> None:
    """A burst of short TLS connections: each one the server closed is freed when it is
    closed, with its TLS state, even while the cyclic garbage collector does not run (as
    under a burst, where it runs late and the memory it frees late is not given back)."""
    def alive() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, Connection))

    gc.collect()
    gc.disable()
    try:
        for _ in range(60):
            with live_controller.session() as session:
                assert session.get(live_controller.url + "/healthz", timeout=10).ok
        held = 2 * 8  # the last connection each worker and gate thread still refers to
        deadline = time.monotonic() + 15  # until the server has seen each client go
        while alive() > held and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive() <= held
    finally:
        gc.enable()
