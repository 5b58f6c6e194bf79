"""Proof that an agent runs on the controller's own Pi, for adopting it without approval.

The controller keeps a random secret in its state dir (0600 in a 0700 directory: only
root on that Pi reads it). The agent there sends HMAC-SHA256(secret, its thumbprint):
bound to its key, useless to anyone who cannot read the file, and never sent except
inside the pinned TLS. A swarm node id, the old evidence, is no proof: it is the CN of
every node certificate, and anyone on the LAN can name it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_FILE = "local-agent.secret"
_CONTEXT = b"swarm-enroll local agent\0"


def local_proof(secret: bytes, thumbprint: str) -> str:
    digest = hmac.new(secret, _CONTEXT + thumbprint.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def proof_holds(secret: bytes, thumbprint: str, proof: str) -> bool:
    return bool(proof) and hmac.compare_digest(local_proof(secret, thumbprint), proof)
