"""Keys and their public names: RFC 7638 thumbprints, the CA pin, the agent key file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import OKPKey

from agent.wire.errors import WireError
from agent.wire.keys import (
    check_pin_format,
    load_or_create_agent_key,
    pin_of_certificate,
    public_jwk,
    thumbprint,
)

RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def _der_elements(der: bytes) -> list[bytes]:
    """The complete TLV encodings inside one DER SEQUENCE (a minimal, independent parser)."""
    def length(at: int) -> tuple[int, int]:
        first = der[at]
        if first < 0x80:
            return first, at + 1
        n = first & 0x7F
        return int.from_bytes(der[at + 1:at + 1 + n], "big"), at + 1 + n

    assert der[0] == 0x30, "not a SEQUENCE"
    total, pos = length(1)
    end = pos + total
    out = []
    while pos < end:
        start = pos
        size, body = length(pos + 1)
        pos = body + size
        out.append(der[start:pos])
    return out


def _spki_der(cert_der: bytes) -> bytes:
    """subjectPublicKeyInfo, read straight from the certificate's DER (RFC 5280 4.1)."""
    tbs = _der_elements(cert_der)[0]
    fields = _der_elements(tbs)
    # [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    assert fields[0][0] == 0xA0, "expected an explicit v3 version"
    return fields[6]


def test_thumbprint_matches_rfc8037_vector() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    assert thumbprint(jwk) == RFC8037_THUMBPRINT


def test_thumbprint_of_generated_key_is_rfc7638() -> None:
    key = OKPKey.generate_key("Ed25519")
    x = key.as_dict(private=False)["x"]
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert thumbprint(key) == expected.rstrip(b"=").decode()
    assert thumbprint(public_jwk(key)) == thumbprint(key)


def test_public_jwk_has_no_private_part() -> None:
    jwk = public_jwk(OKPKey.generate_key("Ed25519"))
    assert set(jwk) == {"kty", "crv", "x"}


def test_pin_is_sha256_of_spki_der(ca) -> None:
    spki = _spki_der(ca.cert.public_bytes(serialization.Encoding.DER))
    assert ca.pin == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert pin_of_certificate(ca.cert) == ca.pin


def test_pins_of_two_cas_differ(ca, other_ca) -> None:
    assert ca.pin != other_ca.pin


def test_check_pin_format_accepts_and_normalises() -> None:
    digest = "AB" * 32
    assert check_pin_format(f"  SHA256:{digest}\n") == "sha256:" + digest.lower()


@pytest.mark.parametrize("pin", [
    "",
    "sha256:",
    "ab" * 32,  # no prefix
    "sha1:" + "ab" * 32,
    "sha256:" + "ab" * 31 + "a",  # 63 digits
    "sha256:" + "ab" * 32 + "a",  # 65 digits
    "sha256:" + "ab" * 31 + "zz",  # not hex
    "sha256:" + "ab" * 16 + " " + "ab" * 16,
    "sha256 " + "ab" * 32,
    "sha256:" + "٣" * 64,  # Unicode digits are not hex digits
])
def test_check_pin_format_rejects(pin: str) -> None:
    with pytest.raises(WireError) as err:
        check_pin_format(pin)
    assert err.value.code == "bad_pin"


def test_agent_key_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent-key.pem"
    first = load_or_create_agent_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert thumbprint(load_or_create_agent_key(path)) == thumbprint(first)


def test_agent_key_mode_tightened(tmp_path: Path) -> None:
    path = tmp_path / "agent-key.pem"
    load_or_create_agent_key(path)
    os.chmod(path, 0o644)
    load_or_create_agent_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
