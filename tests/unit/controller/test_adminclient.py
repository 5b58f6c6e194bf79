"""The admin client's failover between controllers, against real TLS servers on loopback:
an impostor (another CA's certificate) or a dead address is passed over before anything
is sent; a genuine controller's answer is reported, never asked again elsewhere; and a
write that may have reached a controller is never sent to a second one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.wire.errors import WireError
from controller.adminclient import AdminClient

from ..helpers import CA
from .conftest import Serve, admin_api

TOKEN = "sea_unit-secret-never-shown"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _hangs_up_on(method: str) -> Any:
    """A genuine controller that dies after reading a `method` request, before answering."""
    def script(m: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        return (0, {}, b"") if m == method else admin_api(m, path, headers, body)
    return script


def test_the_pin_check_passes_over_an_impostor_and_a_dead_address(
        ca: CA, serve: Serve, dead_url: str) -> None:
    rogue, rogue_saw = serve(impostor=True)
    real, real_saw = serve()
    client = AdminClient([rogue, dead_url, real], TOKEN, pin=ca.pin, timeout=5)
    assert client.health()["status"] == "ok"
    assert client.url == real
    assert rogue_saw.requests == []
    assert client.passed_over[0].startswith(f"{rogue}: pin_mismatch: ")
    assert client.passed_over[1].startswith(f"{dead_url}: unreachable: ")
    assert real_saw.requests[0][2]["authorization"] == f"Bearer {TOKEN}"


def test_a_write_passes_over_an_impostor_and_a_dead_address_before_anything_is_sent(
        ca: CA, serve: Serve, dead_url: str) -> None:
    rogue, rogue_saw = serve(impostor=True)
    real, real_saw = serve()
    client = AdminClient([rogue, dead_url, real], TOKEN, ca_file=ca.cert_path, timeout=5)
    assert client.approve("pi-1")["state"] == "approved"
    assert rogue_saw.requests == []
    # a write goes only to a controller that has answered: /healthz found it
    assert [r[:2] for r in real_saw.requests] == [("GET", "/healthz"),
                                                  ("POST", "/v1/nodes/pi-1/approve")]
    assert client.url == real
    assert client.passed_over == [
        f"{rogue}: tls_failed: its certificate fails the pinned CA "
        "(self-signed certificate in certificate chain)",
        f"{dead_url}: unreachable: connection refused"]


@pytest.mark.parametrize(("ask", "asked"), [
    (lambda client: client.approve("pi-9"), ["/healthz", "/v1/nodes/pi-9/approve"]),
    (lambda client: client.node("pi-9"), ["/v1/nodes/pi-9"])], ids=["write", "read"])
def test_a_genuine_controllers_answer_is_reported_not_asked_elsewhere(
        ca: CA, serve: Serve, ask: Any, asked: list[str]) -> None:
    rogue, _ = serve(impostor=True)
    first, first_saw = serve()
    second, second_saw = serve()
    client = AdminClient([rogue, first, second], TOKEN, ca_file=ca.cert_path, timeout=5)
    with pytest.raises(WireError) as err:
        ask(client)
    assert (err.value.code, err.value.status) == ("not_found", 404)
    assert [r[1] for r in first_saw.requests] == asked  # a write: after /healthz found it
    assert second_saw.requests == []
    assert client.url == first


def test_a_write_that_may_have_reached_a_controller_is_not_sent_to_another(
        ca: CA, serve: Serve, dead_url: str) -> None:
    first, first_saw = serve(_hangs_up_on("POST"))
    second, second_saw = serve()
    client = AdminClient([dead_url, first, second], TOKEN, ca_file=ca.cert_path, timeout=5)
    with pytest.raises(WireError) as err:
        client.approve("pi-1")
    assert err.value.code == "no_answer"
    assert err.value.message.startswith(f"{first}: unreachable: ")
    assert "may have been applied" in err.value.message and TOKEN not in err.value.message
    assert [r[:2] for r in first_saw.requests] == [("GET", "/healthz"),
                                                   ("POST", "/v1/nodes/pi-1/approve")]
    assert second_saw.requests == []  # approved at most once


def test_a_read_that_got_no_answer_is_asked_of_the_next(ca: CA, serve: Serve) -> None:
    rogue, _ = serve(impostor=True)
    first, first_saw = serve(_hangs_up_on("GET"))
    second, _ = serve()
    client = AdminClient([rogue, first, second], TOKEN, ca_file=ca.cert_path, timeout=5)
    assert client.nodes() == [{"hostname": "pi-1", "state": "joined"}]
    assert client.url == second
    assert len(first_saw.requests) == 1
    assert [w.split(": ")[:2] for w in client.passed_over] == [
        [rogue, "tls_failed"], [first, "unreachable"]]


@pytest.mark.parametrize("trust", ["pin", "ca_file"])
def test_when_none_answers_one_error_names_each_and_why(
        ca: CA, serve: Serve, dead_url: str, trust: str) -> None:
    rogue, rogue_saw = serve(impostor=True)
    check = "pin_mismatch" if trust == "pin" else "tls_failed"
    trusting = {"pin": ca.pin} if trust == "pin" else {"ca_file": ca.cert_path}
    with pytest.raises(WireError) as err:
        AdminClient([rogue, dead_url], TOKEN, timeout=5, **trusting).nodes()
    assert (err.value.code, err.value.status) == ("unreachable", 503)
    said = err.value.message
    assert "\n" not in said and TOKEN not in said
    assert f"{rogue}: {check}: " in said and f"{dead_url}: unreachable: " in said
    assert said.index(rogue) < said.index(dead_url)
    with pytest.raises(WireError) as err:  # all failed alike: their code says what to fix
        AdminClient([rogue], TOKEN, timeout=5, **trusting).nodes()
    assert err.value.code == check
    assert rogue_saw.requests == []


def test_a_dead_pis_address_is_passed_over_without_waiting_out_the_timeout(
        ca: CA, serve: Serve, blackhole_url: str) -> None:
    """No TCP connection at all, as a killed manager's address: passed over after a
    3 s probe (nothing sent), not after the request's own timeout; a write too."""
    real, real_saw = serve()
    client = AdminClient([blackhole_url, real], TOKEN, ca_file=ca.cert_path, timeout=20)
    assert client.approve("pi-1")["state"] == "approved"
    assert client.passed_over == [f"{blackhole_url}: unreachable: no connection within 3 s"]
    assert [r[:2] for r in real_saw.requests] == [("GET", "/healthz"),
                                                  ("POST", "/v1/nodes/pi-1/approve")]


def test_a_write_passes_over_an_address_that_hangs_up_in_the_handshake(
        ca: CA, serve: Serve, hangup_url: str) -> None:
    """A write could not tell that hang-up from one after it was sent: a read finds a
    controller that answers first, and the write goes there, once."""
    real, real_saw = serve()
    client = AdminClient([hangup_url, real], TOKEN, ca_file=ca.cert_path, timeout=5)
    assert client.approve("pi-1")["state"] == "approved"
    assert [r[:2] for r in real_saw.requests] == [("GET", "/healthz"),
                                                  ("POST", "/v1/nodes/pi-1/approve")]
    assert client.url == real and client.passed_over[0].startswith(f"{hangup_url}: ")
    assert client.approve("pi-1")["state"] == "approved"  # it answered: no second probe
    assert [r[0] for r in real_saw.requests].count("GET") == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:8443", "127.0.0.1:8443", "https://",
                                 "https://[::1:8443", "https://127.0.0.1",
                                 "https://127.0.0.1:99999"])
def test_a_url_that_is_not_https_is_refused_before_any_token_is_sent(
        ca: CA, url: str) -> None:
    with pytest.raises(WireError) as err:
        AdminClient(["https://127.0.0.1:1", url], TOKEN, ca_file=ca.cert_path)
    assert err.value.code == "bad_url" and "https://" in err.value.message
    assert TOKEN not in err.value.message


def test_a_ca_file_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(WireError) as err:
        AdminClient("https://127.0.0.1:8443", TOKEN, ca_file=tmp_path / "nope.pem")
    assert err.value.code == "bad_ca_file" and "nope.pem: no such file" in err.value.message
