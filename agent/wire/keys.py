"""Keys and their public names: the agent's Ed25519 key, the CA pin, thumbprints.

cryptography and joserfc are imported where they are used: the resident agent needs
neither (agent/wire/signing.py), and they cost it ~15 MB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.wire.errors import WireError
from agent.wire.signing import AgentKey

if TYPE_CHECKING:
    from cryptography import x509
    from joserfc.jwk import ECKey

PIN_PREFIX = "sha256:"

# Ed25519's 8 small-order points have these y (mod p): 1 (identity), -1, 0 and +-y8. Any
# encoding of y, canonical or not (y >= p), either sign bit, names one of them.
_P = 2**255 - 19
_Y8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
_SMALL_ORDER_Y = frozenset({1, _P - 1, 0, _Y8, _P - _Y8})


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created 0600 from the start, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_agent_key(path: Path) -> AgentKey:
    """The agent's identity: created once, kept 0600 (PKCS#8 PEM), never leaves the Pi."""
    if path.exists():
        key = AgentKey.from_pem(path.read_bytes())
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return key
    key = AgentKey.generate()
    write_private(path, key.pem())
    return key


def is_small_order(x: str) -> bool:
    """Whether an Ed25519 public key (`x` of its JWK, base64url) is one of the small-order points.

    With such a key, R = identity and S = 0 verify any message (OpenSSL does not refuse
    them): the key has no secret behind it, so it must not name an agent.
    """
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (binascii.Error, ValueError):
        return False  # not a key at all: the JWK import refuses it
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    return len(raw) == 32 and y % _P in _SMALL_ORDER_Y


def thumbprint(jwk: Any) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a key or a JWK dict: the agent's id."""
    if isinstance(jwk, dict):
        from joserfc.jwk import OKPKey

        jwk = OKPKey.import_key(jwk)
    return str(jwk.thumbprint())


def fingerprint(agent_thumbprint: str) -> str:
    """A short, readable name of an agent key, for a person to compare on the Pi and at
    the controller: the first 80 bits of its RFC 7638 thumbprint in hex, in groups of
    four (`3f2a-9c41-07be-d5e0-1b6c`). 80 bits keep a made-up key with the same
    fingerprint out of any LAN attacker's reach."""
    digest = base64.urlsafe_b64decode(agent_thumbprint + "=" * (-len(agent_thumbprint) % 4))
    text = digest[:10].hex()
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def normalize_fingerprint(text: str) -> str:
    """What a person typed, as hex digits only ('' if it is not a fingerprint at all)."""
    value = text.strip().lower().replace("-", "").replace(":", "").replace(" ", "")
    return value if value and all(c in "0123456789abcdef" for c in value) else ""


def public_jwk(key: Any) -> dict[str, str]:
    """The public JWK of an AgentKey or a joserfc key."""
    return key.public_jwk() if isinstance(key, AgentKey) else dict(key.as_dict(private=False))


def pin_of_certificate(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the SubjectPublicKeyInfo, as kubeadm's CA cert hash."""
    from cryptography.hazmat.primitives import serialization

    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PIN_PREFIX + hashlib.sha256(spki).hexdigest()


def ca_public_key(cert_pem: bytes) -> ECKey:
    """The CA's public key, as the JOSE library wants it, from its certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from joserfc.jwk import ECKey

    public = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ECKey.import_key(public)


def check_pin_format(pin: str) -> str:
    """Normalise a pin and refuse anything that is not `sha256:` and 64 hex digits."""
    value = pin.strip().lower()
    digest = value.removeprefix(PIN_PREFIX)
    if (
        not value.startswith(PIN_PREFIX)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise WireError(
            "bad_pin",
            "a CA pin is 'sha256:' followed by 64 hex digits "
            "(as printed by 'enroll-controller init')",
        )
    return value
