"""Small-order Ed25519 public keys name no one: a JWS "signed" by one is refused.

With the identity point as public key, R = identity and S = 0 satisfy the verification
equation for every message, and OpenSSL accepts it: anyone could be that agent.
"""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import OKPKey

from agent.wire.errors import WireError
from agent.wire.jws import verify_request
from agent.wire.keys import is_small_order

from ...helpers import Controller, b64url

URL = "/v1/enrollments"
IDENTITY = bytes.fromhex("01" + "00" * 31)
P = 2**255 - 19
# The 8 small-order points (canonical encodings, little-endian), as listed by libsodium.
CANONICAL = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
]
# The same points spelled otherwise: y + p (y = 0 and 1), and a sign bit on x = 0.
NON_CANONICAL = [
    (P).to_bytes(32, "little").hex(),
    (P + 1).to_bytes(32, "little").hex(),
    ((P - 1) | 1 << 255).to_bytes(32, "little").hex(),
    (1 | 1 << 255).to_bytes(32, "little").hex(),
]


def _forged(public: bytes, nonce: str = "n0nce") -> str:
    """A request 'signed' by a small-order key: R = identity, S = 0, no private key."""
    header = {"alg": "Ed25519", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(public)},
              "nonce": nonce, "url": URL}
    signing_input = f"{b64url(json.dumps(header))}.{b64url(json.dumps({'hostname': 'pi-1'}))}"
    return f"{signing_input}.{b64url(IDENTITY + bytes(32))}"


def test_identity_key_forgery_is_refused() -> None:
    assert b64url(IDENTITY) == "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(WireError) as err:
        verify_request(_forged(IDENTITY), URL)
    assert (err.value.code, err.value.status) == ("bad_jws", 400)
    assert "small-order" in err.value.message


@pytest.mark.parametrize("encoding", CANONICAL + NON_CANONICAL)
def test_every_small_order_encoding_is_refused(encoding: str) -> None:
    assert is_small_order(b64url(bytes.fromhex(encoding)))
    with pytest.raises(WireError) as err:
        verify_request(_forged(bytes.fromhex(encoding)), URL)
    assert err.value.code == "bad_jws"


def test_real_keys_are_not_small_order() -> None:
    for _ in range(200):
        key = OKPKey.generate_key("Ed25519")
        assert not is_small_order(key.as_dict(private=False)["x"])
    assert not is_small_order("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")  # RFC 8037


def test_controller_answers_the_forgery_400_and_stores_nothing(controller: Controller) -> None:
    nonce = controller.client.head("/v1/nonce").headers["Replay-Nonce"]
    response = controller.client.post(URL, data=_forged(IDENTITY, nonce),
                                      content_type="application/jose")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "bad_jws"
    assert [r for d in controller.state.hosts() for r in d.records] == []
