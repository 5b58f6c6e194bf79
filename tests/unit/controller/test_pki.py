"""The enrollment CA (P-256) and the controller's TLS certificate chained to it."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from agent.wire.keys import pin_of_certificate
from controller import pki


def test_ca_is_p256_and_a_ca(ca) -> None:
    key = ca.cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600


def test_tls_cert_chains_to_ca(ca, tmp_path) -> None:
    cert_path, key_path = tmp_path / "tls.pem", tmp_path / "tls-key.pem"
    pki.issue_tls_cert(ca.cert, ca.key, cert_path, key_path, "ctl-1", ["10.0.0.1"])
    leaf, chained_ca = x509.load_pem_x509_certificates(cert_path.read_bytes())
    leaf.verify_directly_issued_by(ca.cert)
    assert pin_of_certificate(chained_ca) == ca.pin
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"ctl-1", "ctl-1.local", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("10.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_tls_cert_not_issued_by_another_ca(ca, other_ca, tmp_path) -> None:
    cert_path = tmp_path / "tls.pem"
    pki.issue_tls_cert(ca.cert, ca.key, cert_path, tmp_path / "k.pem", "ctl-1", [])
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    with pytest.raises((ValueError, InvalidSignature)):
        leaf.verify_directly_issued_by(other_ca.cert)
