"""TLS to a controller, trusted only through the CA pin.

Before any request is sent, the controller's certificate chain is read from a
bare TLS handshake and the certificate whose SubjectPublicKeyInfo matches the pin
becomes the one and only trust anchor. The first request rides on that checked
connection (no second handshake); every connection after it is ordinary, fully
verified HTTPS against that CA (the system store is never consulted). This
is kubeadm's discovery-token-ca-cert-hash idea applied to TLS itself.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.wire.errors import WireError
from agent.wire.keys import pin_of_certificate


def bare_context() -> ssl.SSLContext:
    """TLS that reads whatever chain the server presents: trusted only once it is checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # checked by hand, once the pin says whom to trust
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def presented_chain(ctx: ssl.SSLContext, host: str, port: int, timeout: float,
                    ) -> tuple[ssl.SSLSocket, list[bytes]]:
    """A TLS connection made with `ctx` (bare_context) and the chain it presented (DER),
    not yet trusted: nothing is sent on it before the chain is checked against the pin."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        tls = ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    try:
        getter = getattr(tls, "get_unverified_chain", None) or tls._sslobj.get_unverified_chain
        return tls, [c.public_bytes(ssl._ssl.ENCODING_DER) for c in getter()]  # type: ignore[attr-defined]
    except BaseException:
        tls.close()
        raise


def _handshake(host: str, port: int, timeout: float,
               ) -> tuple[ssl.SSLSocket, list[x509.Certificate]]:
    tls, ders = presented_chain(bare_context(), host, port, timeout)
    try:
        return tls, [x509.load_der_x509_certificate(d) for d in ders]
    except BaseException:
        tls.close()
        raise


def _check_leaf(leaf: x509.Certificate, host: str, now: datetime.datetime) -> None:
    """What verified TLS checks of the server certificate: valid now, for TLS servers,
    and naming `host` (an IP address among its IP SANs, a name among its DNS SANs)."""
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise WireError("pin_mismatch", "the controller's certificate is not valid now; "
                        "check the clock")
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usage:
        raise WireError("pin_mismatch", "the controller's certificate is not a TLS server's")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if sans is None:
        named = False
    elif address is not None:
        named = address in sans.get_values_for_type(x509.IPAddress)
    else:
        dns = sans.get_values_for_type(x509.DNSName)
        named = host.lower().rstrip(".") in [n.lower().rstrip(".") for n in dns]
    if not named:
        raise WireError("pin_mismatch", f"the controller's certificate is not for {host}")


def _trusted(url: str, chain: list[x509.Certificate], pin: str | None,
             ) -> tuple[x509.Certificate, x509.Certificate]:
    """(CA, leaf) of a chain, checked against `pin` (None: trust on first use)."""
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
    return ca, leaf


def _open(url: str, timeout: float) -> tuple[str, ssl.SSLSocket, list[x509.Certificate]]:
    """(host, untrusted TLS connection, presented chain) of a controller URL."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise WireError("bad_url", f"controller URL must be https://host:port, not {url!r}")
    try:
        return (parts.hostname, *_handshake(parts.hostname, parts.port or 443, timeout))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WireError("unreachable", f"cannot reach controller at {url}: {exc}", 503) from None


def connect_pinned(url: str, pin: str | None, timeout: float = 5.0,
                   ) -> tuple[ssl.SSLSocket, bytes, str]:
    """A TLS connection to the controller at `url` that passed the pin check, ready for
    the first request, with the CA certificate (PEM) and its pin.

    Beside the pin, the server certificate is checked as verified TLS would check it
    (issued by the CA, valid now, for TLS servers, naming the host), so the connection
    is as trustworthy as the verified ones that later use the saved CA file.
    """
    host, tls, chain = _open(url, timeout)
    try:
        ca, leaf = _trusted(url, chain, pin)
        _check_leaf(leaf, host, datetime.datetime.now(datetime.UTC))
    except BaseException:
        tls.close()
        raise
    return tls, ca.public_bytes(serialization.Encoding.PEM), pin_of_certificate(ca)


def fetch_pinned_ca(url: str, pin: str | None, timeout: float = 5.0) -> tuple[bytes, str]:
    """The CA certificate (PEM) of the controller at `url`, checked against `pin`.

    With `pin=None` (trust on first use, lab only) the presented CA is returned
    with its pin so the caller can remember it. Raises WireError when nothing in
    the chain matches the pin or the server certificate was not issued by it.
    """
    _, tls, chain = _open(url, timeout)
    tls.close()
    ca, _ = _trusted(url, chain, pin)
    return ca.public_bytes(serialization.Encoding.PEM), pin_of_certificate(ca)
