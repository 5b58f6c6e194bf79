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
from pathlib import Path

from agent.wire.errors import WireError
from agent.wire.keys import write_private
from controller.hostglob import EXAMPLE as GLOB_EXAMPLE
from controller.hostglob import glob_problem
from controller.state import State, Token, new_id

ADMIN_PREFIX = "sea_"
BOOTSTRAP_PREFIX = "seb_"
MAX_TTL = 365 * 86400
MAX_USES = 100_000


def _whole(value: object) -> int | None:
    """A whole number as JSON has it (60 and 60.0 alike; true is no number); else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def adoption_secret(path: Path) -> bytes:
    """The secret that proves the agent on this Pi to be local (agent/wire/adoption.py):
    made once, 0600, in the 0700 state dir."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        write_private(path, secrets.token_bytes(32))
        return path.read_bytes()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_bootstrap_token(state: State, actor: str, ttl_seconds: int, uses: int,
                           hostname_glob: str = "", description: str = "") -> tuple[str, Token]:
    """A new token; the secret is returned once and never stored."""
    # bool is an int in Python, but JSON `true` is no duration.
    ttl, count = _whole(ttl_seconds), _whole(uses)
    if ttl is None or not 0 < ttl <= MAX_TTL:
        raise WireError("bad_ttl", f"ttl_seconds must be a whole number from 1 to {MAX_TTL}")
    if count is None or not 0 < count <= MAX_USES:
        raise WireError("bad_uses", f"uses must be a whole number from 1 to {MAX_USES}")
    if hostname_glob != "" and (problem := glob_problem(hostname_glob)):
        raise WireError("bad_hostname_glob", f"hostname_glob must be a glob of host names, "
                        f"such as {GLOB_EXAMPLE}, or empty for any: {problem}")
    if not isinstance(description, str) or len(description) > 200:
        raise WireError("bad_description", "description must be text of <= 200 chars")
    secret = new_secret(BOOTSTRAP_PREFIX)
    now = time.time()
    token = Token(new_id("tok"), digest(secret), description, hostname_glob, count, count,
                  now, now + ttl, None, actor)
    state.create_token(token, actor)
    return secret, token


def usable_token(state: State, secret: str, hostname: str) -> Token | None:
    """The token behind `secret` if it may approve `hostname` now; spending is separate."""
    if not secret.startswith(BOOTSTRAP_PREFIX):
        return None
    token = state.token_by_hash(digest(secret))
    if token is None or token.revoked_at is not None or token.uses_left <= 0:
        return None
    if token.expires_at <= time.time():
        return None
    if token.hostname_glob and not fnmatch.fnmatchcase(hostname.lower(),
                                                       token.hostname_glob.lower()):
        return None
    return token
