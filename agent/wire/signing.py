"""The agent's Ed25519 key and its signed requests, without `cryptography` or joserfc.

Signing is all a joined agent does with its key, and cryptography's bindings plus joserfc
cost it ~15 MB resident. OpenSSL's libcrypto is already in the process (the ssl module
links it), so the key signs through it with ctypes; where that library cannot be found,
cryptography does the same. The controller verifies with joserfc (agent/wire/jws.py).

Requests follow ACME (RFC 8555): the protected header carries the agent's public JWK, a
server-issued single-use nonce and the request path. The alg is the fully-specified
JOSE name `Ed25519` (RFC 9864).
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import secrets
from typing import Any

AGENT_ALG = "Ed25519"
# PKCS#8 (RFC 8410) of an Ed25519 private key: this DER prefix, then the 32-byte seed
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_NID_ED25519 = 1087
_PEM_LABEL = "PRIVATE KEY"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _libcrypto() -> ctypes.CDLL | None:
    """The libcrypto the ssl module already mapped (no second copy), else none."""
    import ssl  # noqa: F401 - maps libcrypto into this process

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libcrypto.so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths) or ["libcrypto.so.3"]:
        try:
            lib = ctypes.CDLL(path)
            lib.EVP_PKEY_new_raw_private_key  # noqa: B018 - OpenSSL >= 1.1.1
        except (OSError, AttributeError):
            continue
        p, size = ctypes.c_void_p, ctypes.c_size_t
        lib.EVP_PKEY_new_raw_private_key.restype = p
        lib.EVP_PKEY_new_raw_private_key.argtypes = [ctypes.c_int, p, ctypes.c_char_p, size]
        lib.EVP_PKEY_get_raw_public_key.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(size)]
        lib.EVP_PKEY_free.argtypes = [p]
        lib.EVP_MD_CTX_new.restype = p
        lib.EVP_MD_CTX_free.argtypes = [p]
        lib.EVP_DigestSignInit.argtypes = [p, p, p, p, p]
        lib.EVP_DigestSign.argtypes = [p, ctypes.c_char_p, ctypes.POINTER(size),
                                       ctypes.c_char_p, size]
        return lib
    return None


class _OpenSSL:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def _with_key(self, seed: bytes, use: Any) -> bytes:
        pkey = self.lib.EVP_PKEY_new_raw_private_key(_NID_ED25519, None, seed, len(seed))
        if not pkey:
            raise ValueError("OpenSSL refused the Ed25519 key")
        try:
            return use(pkey)
        finally:
            self.lib.EVP_PKEY_free(pkey)

    def public(self, seed: bytes) -> bytes:
        def get(pkey: int) -> bytes:
            out, size = ctypes.create_string_buffer(32), ctypes.c_size_t(32)
            if self.lib.EVP_PKEY_get_raw_public_key(pkey, out, ctypes.byref(size)) != 1:
                raise ValueError("OpenSSL gave no public key")
            return out.raw[:size.value]
        return self._with_key(seed, get)

    def sign(self, seed: bytes, data: bytes) -> bytes:
        def sign(pkey: int) -> bytes:
            ctx = self.lib.EVP_MD_CTX_new()
            try:
                out, size = ctypes.create_string_buffer(64), ctypes.c_size_t(64)
                if (self.lib.EVP_DigestSignInit(ctx, None, None, None, pkey) != 1
                        or self.lib.EVP_DigestSign(ctx, out, ctypes.byref(size), data,
                                                   len(data)) != 1):
                    raise ValueError("OpenSSL could not sign")
                return out.raw[:size.value]
            finally:
                self.lib.EVP_MD_CTX_free(ctx)
        return self._with_key(seed, sign)


class _Cryptography:
    @staticmethod
    def public(seed: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()

    @staticmethod
    def sign(seed: bytes, data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(seed).sign(data)


_backend: _OpenSSL | _Cryptography | None = None


def backend() -> _OpenSSL | _Cryptography:
    global _backend
    if _backend is None:
        lib = _libcrypto()
        _backend = _OpenSSL(lib) if lib is not None else _Cryptography()
    return _backend


class AgentKey:
    """An Ed25519 private key (its 32-byte seed) with what the protocol needs of it."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._seed = seed
        self.public = backend().public(seed)

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_pem(cls, pem: bytes) -> AgentKey:
        """From PKCS#8 PEM; an encoding other than the plain one goes through cryptography."""
        text = pem.decode("ascii", "replace")
        begin, end = f"-----BEGIN {_PEM_LABEL}-----", f"-----END {_PEM_LABEL}-----"
        if begin in text and end in text:
            body = text.split(begin, 1)[1].split(end, 1)[0]
            der = base64.b64decode("".join(body.split()), validate=False)
            if len(der) == len(_PKCS8_PREFIX) + 32 and der.startswith(_PKCS8_PREFIX):
                return cls(der[len(_PKCS8_PREFIX):])
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(pem, None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the agent key is not an Ed25519 key")
        return cls(key.private_bytes_raw())

    @classmethod
    def of(cls, key: Any) -> AgentKey:
        """This key, or a joserfc OKPKey (tests, tools) as one."""
        if isinstance(key, AgentKey):
            return key
        d = key.as_dict(private=True)["d"]
        return cls(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))

    def pem(self) -> bytes:
        body = base64.encodebytes(_PKCS8_PREFIX + self._seed).decode("ascii")
        return f"-----BEGIN {_PEM_LABEL}-----\n{body}-----END {_PEM_LABEL}-----\n".encode()

    def public_jwk(self) -> dict[str, str]:
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(self.public)}

    def thumbprint(self) -> str:
        """RFC 7638: SHA-256 of the required members, sorted, without white space."""
        canonical = json.dumps(self.public_jwk(), separators=(",", ":"), sort_keys=True)
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def sign(self, data: bytes) -> bytes:
        return backend().sign(self._seed, data)

    def __repr__(self) -> str:
        return f"AgentKey({self.thumbprint()})"  # never the seed


def sign_request(key: Any, payload: Any, nonce: str, url: str) -> str:
    """A compact JWS of `payload`, bound to `nonce` and `url`, signed by the agent key."""
    signer = AgentKey.of(key)
    header = {"alg": AGENT_ALG, "jwk": signer.public_jwk(), "nonce": nonce, "url": url}
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(body.encode()))
    return signing_input + "." + b64url(signer.sign(signing_input.encode("ascii")))
