"""Compact JWS both ways: agent requests (Ed25519) and CA grants (ES256), and every refusal."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import OKPKey

from agent.wire.errors import WireError
from agent.wire.jws import (
    AGENT_ALG,
    GRANT_TYP,
    sign_grant,
    sign_request,
    verify_grant,
    verify_request,
)
from agent.wire.keys import thumbprint
from agent.wire.messages import MAX_BODY_BYTES, Grant

from ...helpers import b64url, compact, ed25519_compact

URL = "/v1/enrollments"
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def _header(key: OKPKey, **changes: Any) -> dict[str, Any]:
    header = {"alg": AGENT_ALG, "jwk": dict(key.as_dict(private=False)), "nonce": "n0nce",
              "url": URL}
    header.update(changes)
    return header


def _refused(token: str | bytes, code: str, url: str = URL) -> WireError:
    with pytest.raises(WireError) as err:
        verify_request(token, url)
    assert err.value.code == code, err.value.message
    return err.value


# -- agent requests ----------------------------------------------------------------------


def test_request_round_trip(key: OKPKey) -> None:
    payload = {"hostname": "PiLike-03", "n": [1, 2, {"x": None}]}
    signed = verify_request(sign_request(key, payload, "n0nce", URL), URL)
    assert signed.payload == payload
    assert signed.nonce == "n0nce"
    assert signed.thumbprint == thumbprint(key)
    assert signed.jwk == dict(key.as_dict(private=False))


def test_request_round_trip_from_bytes(key: OKPKey) -> None:
    token = sign_request(key, {"a": 1}, "n", URL)
    assert verify_request(token.encode() + b"\r\n", URL).payload == {"a": 1}


def test_hand_made_request_is_accepted(key: OKPKey) -> None:
    # Control for the refusals below: the hand-made tokens differ only where they say.
    token = ed25519_compact(key, _header(key), json.dumps({"a": 1}))
    assert verify_request(token, URL).payload == {"a": 1}


def test_tampered_payload_refused(key: OKPKey) -> None:
    head, _, sig = sign_request(key, {"hostname": "pi-1"}, "n", URL).split(".")
    forged = ".".join([head, b64url(json.dumps({"hostname": "mgr-1"})), sig])
    _refused(forged, "bad_signature")


def test_tampered_signature_refused(key: OKPKey) -> None:
    head, body, sig = sign_request(key, {"a": 1}, "n", URL).split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    _refused(".".join([head, body, flipped]), "bad_signature")


def test_jwk_swapped_for_another_key_refused(key: OKPKey) -> None:
    other = OKPKey.generate_key("Ed25519")
    # Signed by `key`, but the header claims to be `other`.
    token = ed25519_compact(key, _header(other), json.dumps({"a": 1}))
    _refused(token, "bad_signature")


def test_header_swapped_from_another_request_refused(key: OKPKey) -> None:
    other = OKPKey.generate_key("Ed25519")
    _, body, sig = sign_request(key, {"a": 1}, "n", URL).split(".")
    other_head = sign_request(other, {"a": 1}, "n", URL).split(".")[0]
    _refused(".".join([other_head, body, sig]), "bad_signature")


def test_alg_none_refused(key: OKPKey) -> None:
    _refused(compact(_header(key, alg="none"), json.dumps({"a": 1}), b""), "bad_jws")


def test_alg_hs256_refused(key: OKPKey) -> None:
    header = _header(key, alg="HS256")
    signing_input = f"{b64url(json.dumps(header))}.{b64url(json.dumps({'a': 1}))}"
    secret = header["jwk"]["x"].encode()  # the classic: the public key used as HMAC secret
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    _refused(f"{signing_input}.{b64url(mac)}", "bad_jws")


def test_alg_eddsa_label_refused(key: OKPKey) -> None:
    # A valid Ed25519 signature, but under the ambiguous label the design replaced.
    err = _refused(ed25519_compact(key, _header(key, alg="EdDSA"), json.dumps({"a": 1})),
                   "bad_jws")
    assert AGENT_ALG in err.message


def test_alg_es256_refused(key: OKPKey) -> None:
    _refused(ed25519_compact(key, _header(key, alg="ES256"), json.dumps({"a": 1})), "bad_jws")


def test_url_mismatch_refused(key: OKPKey) -> None:
    token = sign_request(key, {}, "n", "/v1/enrollments/enr_1/poll")
    _refused(token, "bad_url", url="/v1/enrollments/enr_2/poll")


def test_jwk_with_private_part_refused(key: OKPKey) -> None:
    header = _header(key, jwk=dict(key.as_dict(private=True)))
    assert "d" in header["jwk"]
    _refused(ed25519_compact(key, header, json.dumps({"a": 1})), "bad_jws")


@pytest.mark.parametrize("jwk", [
    None,
    "not a jwk",
    {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
    {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
    {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},  # too short to be a key
])
def test_bad_header_jwk_refused(key: OKPKey, jwk: Any) -> None:
    header = _header(key, jwk=jwk)
    _refused(ed25519_compact(key, header, json.dumps({"a": 1})), "bad_jws")


def test_missing_nonce_refused(key: OKPKey) -> None:
    header = _header(key)
    del header["nonce"]
    with pytest.raises(WireError):
        verify_request(ed25519_compact(key, header, json.dumps({"a": 1})), URL)


def test_payload_not_json_refused(key: OKPKey) -> None:
    _refused(ed25519_compact(key, _header(key), "hostname=pi"), "bad_payload")


@pytest.mark.parametrize("garbage", [
    "", "hello", "a.b.c", "....", "eyJhbGciOiJub25lIn0", "{\"alg\": \"none\"}",
    b"\xff\xfe\x00", "é.é.é",
])
def test_non_jws_garbage_refused(garbage: str | bytes) -> None:
    _refused(garbage, "bad_jws")


def test_oversized_token_refused_413() -> None:
    err = _refused("x" * (MAX_BODY_BYTES * 2 + 1), "body_too_large")
    assert err.status == 413


def test_oversized_signed_payload_refused_413(key: OKPKey) -> None:
    # A real signature over a payload above the limit, in a token below the raw-size guard.
    token = sign_request(key, {"pad": "x" * (MAX_BODY_BYTES + 100)}, "n", URL)
    assert len(token) < MAX_BODY_BYTES * 2
    err = _refused(token, "body_too_large")
    assert err.status == 413


def test_token_just_under_body_limit_accepted(key: OKPKey) -> None:
    token = sign_request(key, {"pad": "x" * 11_500}, "n", URL)
    assert MAX_BODY_BYTES - 1000 < len(token) < MAX_BODY_BYTES
    assert verify_request(token, URL).payload["pad"] == "x" * 11_500


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_fuzz_verify_request_raises_only_wire_error(token: str | bytes) -> None:
    with contextlib.suppress(WireError):
        verify_request(token, URL)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@FUZZ
@given(changes=st.dictionaries(
    st.sampled_from(["alg", "jwk", "nonce", "url", "crit", "b64", "kid", "typ", "x5c"]),
    _JSON, max_size=4))
@example(changes={"crit": ["b64"], "b64": False})
@example(changes={"nonce": 5})
@example(changes={"jwk": {"kty": "OKP", "crv": "Ed25519", "x": 5}})
def test_fuzz_signed_headers_raise_only_wire_error(key: OKPKey, changes: dict[str, Any]) -> None:
    token = ed25519_compact(key, _header(key, **changes), json.dumps({"a": 1}))
    with contextlib.suppress(WireError):
        verify_request(token, URL)


# -- grants ------------------------------------------------------------------------------


def _grant(agent: str, hostname: str = "PiLike-03", ttl: int = 600, **changes: Any) -> Grant:
    now = int(time.time())
    fields: dict[str, Any] = {
        "hostname": hostname, "agent": agent, "role": "worker",
        "join_token": "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25,
        "managers": ["10.0.0.1:2377"], "labels": {"zone": "lab"}, "cluster": "c" * 25,
        "enrollment": "enr_0123456789ab", "iat": now, "exp": now + ttl,
    }
    fields.update(changes)
    return Grant(**fields)


def test_grant_round_trip(ca, key: OKPKey) -> None:
    grant = _grant(thumbprint(key))
    token = sign_grant(ca.signing_key, grant)
    assert verify_grant(token, ca.public_key, thumbprint(key), "PiLike-03") == grant


def test_grant_hostname_compared_case_insensitively(ca, key: OKPKey) -> None:
    token = sign_grant(ca.signing_key, _grant(thumbprint(key)))
    assert verify_grant(token, ca.public_key, thumbprint(key), "pilike-03").hostname == "PiLike-03"


def test_grant_header_says_what_it_is(ca, key: OKPKey) -> None:
    header = json.loads(_b64decode(sign_grant(ca.signing_key, _grant("t")).split(".")[0]))
    assert header == {"alg": "ES256", "typ": GRANT_TYP}


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _grant_refused(token: str, ca, key: OKPKey, code: str, hostname: str = "PiLike-03",
                   now: float | None = None) -> None:
    with pytest.raises(WireError) as err:
        verify_grant(token, ca.public_key, thumbprint(key), hostname, now=now)
    assert err.value.code == code, err.value.message


def test_expired_grant_refused(ca, key: OKPKey) -> None:
    grant = _grant(thumbprint(key), ttl=600)
    token = sign_grant(ca.signing_key, grant)
    assert verify_grant(token, ca.public_key, thumbprint(key), "PiLike-03", now=grant.exp - 1)
    _grant_refused(token, ca, key, "grant_expired", now=grant.exp)
    _grant_refused(token, ca, key, "grant_expired", now=grant.exp + 3600)


def test_grant_for_another_thumbprint_refused(ca, key: OKPKey) -> None:
    other = OKPKey.generate_key("Ed25519")
    token = sign_grant(ca.signing_key, _grant(thumbprint(other)))
    _grant_refused(token, ca, key, "grant_not_ours")


def test_grant_for_another_hostname_refused(ca, key: OKPKey) -> None:
    token = sign_grant(ca.signing_key, _grant(thumbprint(key), hostname="mgr-1"))
    _grant_refused(token, ca, key, "grant_not_ours", hostname="PiLike-03")


def test_grant_signed_by_another_ca_refused(ca, other_ca, key: OKPKey) -> None:
    token = sign_grant(other_ca.signing_key, _grant(thumbprint(key)))
    _grant_refused(token, ca, key, "bad_grant")


def test_tampered_grant_refused(ca, key: OKPKey) -> None:
    head, _, sig = sign_grant(ca.signing_key, _grant(thumbprint(key))).split(".")
    forged = _grant(thumbprint(key), role="manager").to_json()
    token = ".".join([head, b64url(json.dumps(forged)), sig])
    _grant_refused(token, ca, key, "bad_grant")


def test_grant_alg_none_refused(ca, key: OKPKey) -> None:
    body = json.dumps(_grant(thumbprint(key)).to_json())
    _grant_refused(compact({"alg": "none", "typ": GRANT_TYP}, body, b""), ca, key, "bad_grant")


def test_grant_hs256_with_ca_public_key_refused(ca, key: OKPKey) -> None:
    header = {"alg": "HS256", "typ": GRANT_TYP}
    claims = json.dumps(_grant(thumbprint(key)).to_json())
    signing_input = f"{b64url(json.dumps(header))}.{b64url(claims)}"
    secret = ca.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    _grant_refused(f"{signing_input}.{b64url(mac)}", ca, key, "bad_grant")


def test_agent_request_is_not_a_grant(ca, key: OKPKey) -> None:
    token = sign_request(key, _grant(thumbprint(key)).to_json(), "n", URL)
    _grant_refused(token, ca, key, "bad_grant")


def test_grant_without_typ_refused(ca, key: OKPKey) -> None:
    body = json.dumps(_grant(thumbprint(key)).to_json())
    token = jws.serialize_compact({"alg": "ES256"}, body, ca.signing_key)
    _grant_refused(token, ca, key, "bad_grant")


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "e30.e30.e30"])
def test_grant_garbage_refused(ca, key: OKPKey, garbage: str) -> None:
    _grant_refused(garbage, ca, key, "bad_grant")


@pytest.mark.parametrize("changes", [
    {"role": "admin"}, {"managers": []}, {"hostname": "bad_host"}, {"iat": "yesterday"},
    {"labels": {"ok": 5}}, {"controllers": "https://x"}, {"controllers": ["http://x:8443"]},
    {"controllers": ["https://x"] * 17},
])
def test_grant_with_bad_claims_refused(ca, key: OKPKey, changes: dict[str, Any]) -> None:
    claims = {**_grant(thumbprint(key)).to_json(), **changes}
    token = jws.serialize_compact({"alg": "ES256", "typ": GRANT_TYP}, json.dumps(claims),
                                  ca.signing_key)
    with pytest.raises(WireError):
        verify_grant(token, ca.public_key, thumbprint(key), "PiLike-03")


def test_grant_repr_hides_join_token() -> None:
    grant = _grant("t")
    assert grant.join_token not in repr(grant)


def test_grant_claims_this_agent_does_not_know_are_ignored(ca, key: OKPKey) -> None:
    """A newer controller's grant (CA-signed, so no stranger's): what is known is read."""
    claims = {**_grant(thumbprint(key), controllers=["https://198.18.0.12:8443"]).to_json(),
              "something_new": {"x": 1}}
    token = jws.serialize_compact({"alg": "ES256", "typ": GRANT_TYP}, json.dumps(claims),
                                  ca.signing_key)
    grant = verify_grant(token, ca.public_key, thumbprint(key), "PiLike-03")
    assert grant.controllers == ["https://198.18.0.12:8443"]
