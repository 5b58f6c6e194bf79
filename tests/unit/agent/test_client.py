"""The agent's HTTPS client and pin check against a real TLS server on loopback whose
certificate our CA issued (and, on purpose, certificates it should not trust)."""

from __future__ import annotations

import datetime
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from joserfc.jwk import OKPKey

from agent.client import MAX_ANSWER, ControllerClient, Unreachable
from agent.wire.errors import WireError
from agent.wire.pinning import connect_pinned
from controller import pki

from ..helpers import CA
from .scripted import tls_http

NONCE = {"Replay-Nonce": "n-1"}


def controller(method: str, path: str, headers: dict, body: bytes) -> Any:
    """A controller that gives a nonce and answers every signed request `pending`."""
    if method == "HEAD":
        return 200, NONCE, b""
    if path == "/healthz":
        return 200, {}, b'{"status": "ok", "cluster": "abc123"}'
    return 202, NONCE, json.dumps({"status": "pending", "id": "enr_1"}).encode()


def _leaf(ca: CA, directory: Path, ips: list[str], days: int = 30, ago: int = 1,
          usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
          ) -> tuple[Path, Path]:
    """A leaf certificate (chain file, key file) issued by `ca` for `ips`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctl")]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=ago))
        .not_valid_after(now - datetime.timedelta(days=ago) + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    chain, key_file = directory / "leaf.pem", directory / "leaf-key.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                      + ca.cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_file


@pytest.fixture
def served(ca: CA, tmp_path: Path) -> tuple[Path, Path]:
    """The controller's own kind of certificate, as controller.pki issues it."""
    chain, key = tmp_path / "tls.pem", tmp_path / "tls-key.pem"
    cert, ca_key = pki.load_ca(ca.cert_path, ca.key_path)
    pki.issue_tls_cert(cert, ca_key, chain, key, "ctl", ["127.0.0.1"])
    return chain, key


def _key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def test_the_first_request_rides_on_the_connection_that_passed_the_pin_check(
        ca: CA, served: tuple[Path, Path], tmp_path: Path) -> None:
    with tls_http(*served, controller) as (url, seen):
        tls, pem, pin = connect_pinned(url, ca.pin)
        assert pin == ca.pin and b"BEGIN CERTIFICATE" in pem
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(pem)
        client = ControllerClient(url, ca_file, _key(), sock=tls)
        try:
            assert client.enroll({"hostname": "pi-1"})["status"] == "pending"
            assert client.poll("enr_1")["status"] == "pending"
        finally:
            client.close()
    assert [r[:2] for r in seen.requests] == [
        ("HEAD", "/v1/nonce"), ("POST", "/v1/enrollments"), ("POST", "/v1/enrollments/enr_1/poll")]
    assert seen.connections == 1  # one handshake for all three
    assert seen.requests[1][2]["content-type"] == "application/jose"


def test_a_later_client_verifies_against_the_saved_ca_only(
        ca: CA, other_ca: CA, served: tuple[Path, Path], monkeypatch: Any) -> None:
    # what the environment says must not change whom the agent trusts or where it sends
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca.cert_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with tls_http(*served, controller) as (url, _):
        assert ControllerClient(url, ca.cert_path, _key()).cluster() == "abc123"
        with pytest.raises(WireError) as err:
            ControllerClient(url, other_ca.cert_path, _key()).cluster()
    assert (err.value.code, err.value.status) == ("tls_failed", 495)


def test_another_cas_controller_fails_the_pin_before_anything_is_sent(
        other_ca: CA, served: tuple[Path, Path]) -> None:
    with tls_http(*served, controller) as (url, seen), pytest.raises(WireError) as err:
        connect_pinned(url, other_ca.pin)
    assert err.value.code == "pin_mismatch"
    assert seen.requests == []


@pytest.mark.parametrize(("leaf", "says"), [
    ({"ips": ["10.9.9.9"]}, "not for 127.0.0.1"),
    ({"ips": ["127.0.0.1"], "days": 2, "ago": 3}, "not valid now"),
    ({"ips": ["127.0.0.1"], "usage": ExtendedKeyUsageOID.CLIENT_AUTH}, "not a TLS server"),
])
def test_a_leaf_of_our_ca_is_still_checked_as_verified_tls_would(
        ca: CA, tmp_path: Path, leaf: dict[str, Any], says: str) -> None:
    with tls_http(*_leaf(ca, tmp_path, **leaf), controller) as (url, seen), \
            pytest.raises(WireError) as err:
        connect_pinned(url, ca.pin)
    assert err.value.code == "pin_mismatch" and says in err.value.message
    assert seen.requests == []


@pytest.mark.parametrize("body", [b"<html>proxy login</html>", b"[]",
                                  b'{"status": "' + b"x" * MAX_ANSWER + b'"}'])
def test_an_answer_that_is_no_small_json_object_is_bad_answer(
        ca: CA, served: tuple[Path, Path], body: bytes) -> None:
    def odd(method: str, path: str, headers: dict, _: bytes) -> Any:
        return (200, NONCE, b"") if method == "HEAD" else (200, {}, body)

    with tls_http(*served, odd) as (url, _), pytest.raises(WireError) as err:
        ControllerClient(url, ca.cert_path, _key()).enroll({})
    assert (err.value.code, err.value.status) == ("bad_answer", 502)


def test_an_error_answer_is_a_wire_error_with_its_retry_after(
        ca: CA, served: tuple[Path, Path]) -> None:
    def busy(method: str, path: str, headers: dict, _: bytes) -> Any:
        if method == "HEAD":
            return 200, NONCE, b""
        return 503, {"Retry-After": "7"}, b'{"error": "busy", "message": "later"}'

    with tls_http(*served, busy) as (url, _), pytest.raises(WireError) as err:
        ControllerClient(url, ca.cert_path, _key()).enroll({})
    assert (err.value.code, err.value.status, err.value.retry_after) == ("busy", 503, 7)


def test_a_stale_nonce_is_retried_once_with_a_fresh_one(
        ca: CA, served: tuple[Path, Path]) -> None:
    posts = []

    def restarted(method: str, path: str, headers: dict, body: bytes) -> Any:
        if method == "HEAD":
            return 200, NONCE, b""
        posts.append(body)
        if len(posts) == 1:
            return 400, NONCE, b'{"error": "bad_nonce", "message": "stale"}'
        return 202, {}, b'{"status": "pending"}'

    with tls_http(*served, restarted) as (url, _):
        assert ControllerClient(url, ca.cert_path, _key()).enroll({})["status"] == "pending"
    assert len(posts) == 2


def test_no_nonce_is_no_nonce(ca: CA, served: tuple[Path, Path]) -> None:
    with tls_http(*served, lambda *_: (200, {}, b"{}")) as (url, _), \
            pytest.raises(WireError, match="no nonce"):
        ControllerClient(url, ca.cert_path, _key()).enroll({})


def test_nobody_listening_is_unreachable(ca: CA) -> None:
    with pytest.raises(Unreachable):
        ControllerClient("https://127.0.0.1:9", ca.cert_path, _key()).cluster()
    with pytest.raises(WireError) as err:
        connect_pinned("https://127.0.0.1:9", ca.pin)
    assert err.value.code == "unreachable"
