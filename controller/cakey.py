"""The enrollment CA's key, shared by the controllers of every manager, never a worker's.

Like kubeadm's `--upload-certs` (control-plane certificates kept in the cluster,
encrypted, opened by joining control-plane nodes with a key they were given), the CA key
is kept in the shared state encrypted (AES-256-GCM) under a key derived (HKDF-SHA256)
from the swarm's *manager* join token, which only managers can read (`GET /swarm`) and
which never leaves them: grants carry the worker token. So the document is useless to
anyone who can read it but is no manager, and a manager promoted tomorrow opens it with
what its own Docker daemon tells it.

Who can read the key, in plain words: root on any manager (it can read the manager token
and the shared state, or the controller's state dir, 0700). Never a worker, a container
(viz gets a filtered Docker API without configs or the swarm's tokens), or the LAN.

When the manager token is rotated, the controller that acts for the cluster wraps the
key again under the new token (it still holds the key in memory); every controller keeps
its copy in its state dir, so one that starts later can do the same.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY = "ca"
_SALT = b"swarm-enroll CA key wrap v1"


class CAKeyError(Exception):
    """The shared CA key cannot be opened; the message says why and what to do."""


@dataclass(frozen=True)
class Wrapped:
    """The shared document: the CA certificate in clear, its key sealed."""

    cert_pem: str
    sealed: str  # base64 of nonce (12 bytes) + AES-GCM ciphertext of the key's PEM
    token_id: str  # which manager token sealed it (a hash, not the token)

    def to_json(self) -> dict[str, str]:
        return {"cert_pem": self.cert_pem, "sealed": self.sealed, "token_id": self.token_id}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Wrapped:
        return cls(data["cert_pem"], data["sealed"], data["token_id"])


def _secret(manager_token: str) -> bytes:
    """The random part of SWMTKN-1-<CA digest>-<secret>; the whole token if it has no
    such shape (a test's)."""
    return manager_token.rsplit("-", 1)[-1].encode()


def token_id(manager_token: str) -> str:
    return hashlib.sha256(b"swarm-enroll token id\0" + _secret(manager_token)).hexdigest()[:16]


def _wrapping_key(manager_token: str, cluster_id: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                info=cluster_id.encode()).derive(_secret(manager_token))


def seal(cert_pem: bytes, key_pem: bytes, manager_token: str, cluster_id: str) -> Wrapped:
    nonce = os.urandom(12)
    box = AESGCM(_wrapping_key(manager_token, cluster_id)).encrypt(nonce, key_pem,
                                                                   cert_pem)
    return Wrapped(cert_pem.decode(), base64.b64encode(nonce + box).decode(),
                   token_id(manager_token))


def open_sealed(wrapped: Wrapped, manager_token: str, cluster_id: str) -> bytes:
    """The CA key's PEM; CAKeyError if this manager token did not seal it."""
    if wrapped.token_id != token_id(manager_token):
        raise CAKeyError("the CA key was sealed under an earlier manager join token (it was "
                         "rotated while no controller ran); start a controller that still "
                         "has ca-key.pem in its state dir, and it seals the key again")
    raw = base64.b64decode(wrapped.sealed)
    try:
        return AESGCM(_wrapping_key(manager_token, cluster_id)).decrypt(
            raw[:12], raw[12:], wrapped.cert_pem.encode())
    except Exception:
        raise CAKeyError("the shared CA key does not open with this swarm's manager token "
                         "(a document from another swarm?)") from None
