"""Compact JWS, both directions: agent requests (Ed25519) and CA grants (ES256).

Agent requests follow ACME (RFC 8555): the protected header carries the agent's
public JWK, a server-issued single-use nonce and the request path, so a captured
request can neither be replayed nor pointed at another endpoint. The agent's
signatures use the fully-specified JOSE name `Ed25519` (RFC 9864), which replaces
the ambiguous `EdDSA` label for the very same algorithm. The agent signs them with
agent/wire/signing.py (no joserfc there: it stays out of the resident agent).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import ExceededSizeError, JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.registry import HeaderParameter

from agent.wire import safejson
from agent.wire.errors import WireError
from agent.wire.keys import is_small_order, thumbprint
from agent.wire.messages import MAX_BODY_BYTES, Grant
from agent.wire.signing import AGENT_ALG
from agent.wire.signing import sign_request as sign_request  # its home is signing.py

CA_ALG = "ES256"
GRANT_TYP = "swarm-enroll-grant+jwt"

_AGENT_REGISTRY = jws.JWSRegistry(
    header_registry={
        "nonce": HeaderParameter("server-issued single-use nonce", "str", True),
        "url": HeaderParameter("request path the signature is bound to", "str", True),
        "jwk": HeaderParameter("the agent's public key", "jwk", True),
    },
    algorithms=[AGENT_ALG],
)
_AGENT_REGISTRY.max_payload_length = MAX_BODY_BYTES
_GRANT_REGISTRY = jws.JWSRegistry(algorithms=[CA_ALG])


@dataclass(frozen=True)
class SignedRequest:
    """A verified agent request: who signed it, for which nonce and path, and what."""

    payload: Any
    thumbprint: str
    jwk: dict[str, str]
    nonce: str


def verify_request(token: str | bytes, url: str) -> SignedRequest:
    """Check the signature against the key in the header; the nonce is the caller's job."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise WireError("bad_jws", "body must be a compact JWS") from None
    token = token.strip()
    if len(token) > MAX_BODY_BYTES * 2:
        raise WireError("body_too_large", "request body is too large", 413)
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeEncodeError):
        raise WireError("bad_jws", "body must be a compact JWS signed by the agent key") from None
    jwk = header.get("jwk")
    if header.get("alg") != AGENT_ALG:
        raise WireError("bad_jws", f"requests must be signed with alg {AGENT_ALG}")
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise WireError("bad_jws", "protected header must carry the agent's Ed25519 public jwk")
    if "d" in jwk:
        raise WireError("bad_jws", "the jwk in the header must be the public key only")
    if is_small_order(str(jwk.get("x", ""))):
        raise WireError("bad_jws", "the jwk in the header is a small-order point, not a key")
    try:
        key = OKPKey.import_key(jwk)
        obj = jws.deserialize_compact(token, key, registry=_AGENT_REGISTRY)
    except ExceededSizeError:
        raise WireError("body_too_large", "request body is too large", 413) from None
    except JoseError:
        message = "signature does not verify with the key in the header"
        raise WireError("bad_signature", message) from None
    except (ValueError, TypeError):
        raise WireError("bad_jws", "protected header jwk is not a valid Ed25519 key") from None
    if header.get("url") != url:
        raise WireError("bad_url", f"signature is bound to {header.get('url')!r}, not {url!r}")
    try:
        payload = safejson.loads(obj.payload)
    except safejson.TooDeep:
        raise WireError("bad_payload", f"payload must be JSON nested at most "
                        f"{safejson.MAX_DEPTH} levels deep") from None
    except ValueError:
        raise WireError("bad_payload", "payload must be JSON") from None
    public = {k: jwk[k] for k in ("kty", "crv", "x")}
    return SignedRequest(payload, thumbprint(key), public, str(header["nonce"]))


def sign_grant(ca_key: ECKey, grant: Grant) -> str:
    body = json.dumps(grant.to_json(), separators=(",", ":"), sort_keys=True)
    return jws.serialize_compact(
        {"alg": CA_ALG, "typ": GRANT_TYP}, body, ca_key, registry=_GRANT_REGISTRY
    )


def verify_grant(
    token: str, ca_key: ECKey, agent_thumbprint: str, hostname: str, now: float | None = None
) -> Grant:
    """Accept a grant only if our CA signed it, for this very agent, and it is still fresh."""
    try:
        obj = jws.deserialize_compact(token, ca_key, registry=_GRANT_REGISTRY)
    except (JoseError, ValueError, TypeError):
        raise WireError("bad_grant", "grant is not signed by the pinned enrollment CA") from None
    if obj.headers().get("typ") != GRANT_TYP:
        raise WireError("bad_grant", "token is not a swarm-enroll grant")
    try:
        grant = Grant.from_json(safejson.loads(obj.payload))
    except ValueError:
        raise WireError("bad_grant", "grant payload is not JSON") from None
    if grant.agent != agent_thumbprint:
        raise WireError("grant_not_ours", "grant is bound to another agent key")
    if grant.hostname.lower() != hostname.lower():
        raise WireError("grant_not_ours", f"grant is for {grant.hostname!r}, not {hostname!r}")
    if (now if now is not None else time.time()) >= grant.exp:
        raise WireError("grant_expired", "grant has expired; poll again for a fresh one")
    return grant
