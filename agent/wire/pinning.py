"""TLS to a controller, trusted only through the CA pin.

Before any request is sent, the controller's certificate chain is read from a
bare TLS handshake and the certificate whose SubjectPublicKeyInfo matches the pin
becomes the one and only trust anchor; every request after that is ordinary,
fully verified HTTPS against that CA (the system store is never consulted). This
is kubeadm's discovery-token-ca-cert-hash idea applied to TLS itself.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from agent.wire.errors import WireError
from agent.wire.keys import pin_of_certificate


def _presented_chain(host: str, port: int, timeout: float) -> list[x509.Certificate]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only to read the chain; nothing is sent before it is checked against the pin.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(
        raw, server_hostname=host
    ) as tls:
        getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain
        ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in getter()]  # type: ignore[attr-defined]
    return [x509.load_der_x509_certificate(d) for d in ders]


def fetch_pinned_ca(url: str, pin: str | None, timeout: float = 5.0) -> tuple[bytes, str]:
    """The CA certificate (PEM) of the controller at `url`, checked against `pin`.

    With `pin=None` (trust on first use, lab only) the presented CA is returned
    with its pin so the caller can remember it. Raises WireError when nothing in
    the chain matches the pin or the server certificate was not issued by it.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise WireError("bad_url", f"controller URL must be https://host:port, not {url!r}")
    try:
        chain = _presented_chain(parts.hostname, parts.port or 443, timeout)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WireError("unreachable", f"cannot reach controller at {url}: {exc}", 503) from None
    if not chain:
        raise WireError("pin_mismatch", f"{url} presented no certificate")
    leaf = chain[0]
    if pin is None:
        ca = chain[-1]
    else:
        matches = [c for c in chain if pin_of_certificate(c) == pin]
        if not matches:
            raise WireError(
                "pin_mismatch",
                f"controller at {url} does not present the pinned CA {pin[:19]}…; "
                "it belongs to another cluster, or the pin in the config is wrong",
            )
        ca = matches[0]
    try:
        if ca is not leaf:
            leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise WireError("pin_mismatch", f"server certificate not issued by the CA: {exc}") from None
    now = datetime.datetime.now(datetime.UTC)
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise WireError("pin_mismatch", "the pinned CA is not valid now; check the clock")
    return ca.public_bytes(serialization.Encoding.PEM), pin_of_certificate(ca)
