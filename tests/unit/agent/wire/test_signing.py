"""The agent's own Ed25519 signing (OpenSSL through ctypes) against cryptography and joserfc."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import OKPKey

from agent.wire import signing
from agent.wire.jws import verify_request
from agent.wire.signing import AgentKey, sign_request


def _raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def test_the_openssl_backend_is_the_one_in_use_here() -> None:
    # this machine's Python links libcrypto: the resident agent must not need cryptography
    assert isinstance(signing.backend(), signing._OpenSSL)


@pytest.mark.parametrize("backend", [signing.backend(), signing._Cryptography()])
def test_signatures_verify_with_cryptography(backend: object,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "_backend", backend)
    theirs = ed25519.Ed25519PrivateKey.generate()
    ours = AgentKey(_raw(theirs))
    assert ours.public == theirs.public_key().public_bytes_raw()
    signature = ours.sign(b"signing input")
    assert signature == theirs.sign(b"signing input")  # Ed25519 is deterministic
    theirs.public_key().verify(signature, b"signing input")


def test_thumbprint_and_jwk_are_joserfcs() -> None:
    okp = OKPKey.generate_key("Ed25519")
    ours = AgentKey.of(okp)
    assert ours.thumbprint() == okp.thumbprint()
    assert ours.public_jwk() == dict(okp.as_dict(private=False))


def test_pem_is_pkcs8_both_ways() -> None:
    ours = AgentKey.generate()
    loaded = serialization.load_pem_private_key(ours.pem(), None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    assert loaded.public_key().public_bytes_raw() == ours.public
    theirs = ed25519.Ed25519PrivateKey.generate()
    pem = theirs.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    assert AgentKey.from_pem(pem).public == theirs.public_key().public_bytes_raw()


def test_a_key_file_in_another_format_is_refused_not_misread() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption())
    with pytest.raises(ValueError):
        AgentKey.from_pem(pem)


def test_a_key_that_is_not_ed25519_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="not an Ed25519"):
        AgentKey.from_pem(pem)


def test_a_signed_request_verifies_at_the_controller_and_names_the_key() -> None:
    key = AgentKey.generate()
    signed = verify_request(sign_request(key, {"hostname": "pi-1"}, "n0nce", "/v1/x"), "/v1/x")
    assert (signed.payload, signed.nonce, signed.thumbprint) == (
        {"hostname": "pi-1"}, "n0nce", key.thumbprint())


def test_the_seed_is_not_in_the_repr() -> None:
    key = AgentKey.generate()
    assert base64.urlsafe_b64encode(key._seed).decode()[:20] not in repr(key)
