"""Admin and bootstrap tokens: random secrets, stored only as hashes.

Tokens carry 256 bits of randomness, so a plain SHA-256 is enough to store
them (as GitHub and Tailscale do); a slow password hash would only slow every
request. The prefixes make leaked tokens easy for secret scanners to spot.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import time

from agent.wire.errors import WireError
from controller.store import Store, Token, new_id

ADMIN_PREFIX = "sea_"
BOOTSTRAP_PREFIX = "seb_"
MAX_TTL = 365 * 86400
MAX_USES = 100_000


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_bootstrap_token(store: Store, actor: str, ttl_seconds: int, uses: int,
                           hostname_glob: str = "", description: str = "") -> tuple[str, Token]:
    """A new token; the secret is returned once and never stored."""
    # bool is an int in Python, but JSON `true` is no duration.
    if not _whole(ttl_seconds) or not 0 < ttl_seconds <= MAX_TTL:
        raise WireError("bad_ttl", f"ttl_seconds must be a whole number from 1 to {MAX_TTL}")
    if not _whole(uses) or not 0 < uses <= MAX_USES:
        raise WireError("bad_uses", f"uses must be a whole number from 1 to {MAX_USES}")
    if not isinstance(hostname_glob, str) or len(hostname_glob) > 253:
        raise WireError("bad_hostname_glob", "hostname_glob must be a glob of <= 253 chars")
    if not isinstance(description, str) or len(description) > 200:
        raise WireError("bad_description", "description must be text of <= 200 chars")
    secret = new_secret(BOOTSTRAP_PREFIX)
    now = time.time()
    token = Token(new_id("tok"), digest(secret), description, hostname_glob, uses, uses,
                  now, now + ttl_seconds, None, actor)
    store.create_token(token)
    return secret, token


def usable_token(store: Store, secret: str, hostname: str) -> Token | None:
    """The token behind `secret` if it may approve `hostname` now; spending is separate."""
    if not secret.startswith(BOOTSTRAP_PREFIX):
        return None
    token = store.token_by_hash(digest(secret))
    if token is None or token.revoked_at is not None or token.uses_left <= 0:
        return None
    if token.expires_at <= time.time():
        return None
    if token.hostname_glob and not fnmatch.fnmatchcase(hostname.lower(),
                                                       token.hostname_glob.lower()):
        return None
    return token
