"""The CA key, sealed for managers only: opened with the manager token it was sealed under,
never with the worker token, another swarm's, or after a rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import cakey
from controller.pki import create_ca

MANAGER = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-7p73s1dx5in4tatdymyhg9hu2"
WORKER = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"


@pytest.fixture
def ca(tmp_path: Path) -> tuple[bytes, bytes]:
    create_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "unit")
    return (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca-key.pem").read_bytes()


def test_sealed_with_the_manager_token_opens_only_with_it(ca: tuple[bytes, bytes]) -> None:
    cert, key = ca
    wrapped = cakey.seal(cert, key, MANAGER, "cluster-1")
    assert key.decode() not in str(wrapped.to_json()) and b"PRIVATE" not in \
        wrapped.sealed.encode()
    again = cakey.Wrapped.from_json(wrapped.to_json())
    assert cakey.open_sealed(again, MANAGER, "cluster-1") == key
    with pytest.raises(cakey.CAKeyError, match="earlier manager join token"):
        cakey.open_sealed(again, WORKER, "cluster-1")  # a worker has no way in
    with pytest.raises(cakey.CAKeyError, match="another swarm"):
        cakey.open_sealed(again, MANAGER, "cluster-2")


def test_the_certificate_cannot_be_swapped_under_the_key(ca: tuple[bytes, bytes],
                                                         tmp_path: Path) -> None:
    cert, key = ca
    wrapped = cakey.seal(cert, key, MANAGER, "c")
    create_ca(tmp_path / "other.pem", tmp_path / "other-key.pem", "other")
    forged = cakey.Wrapped((tmp_path / "other.pem").read_text(), wrapped.sealed,
                           wrapped.token_id)
    with pytest.raises(cakey.CAKeyError):
        cakey.open_sealed(forged, MANAGER, "c")


def test_token_ids_say_nothing_of_the_token() -> None:
    assert cakey.token_id(MANAGER) != cakey.token_id(WORKER)
    assert MANAGER.rsplit("-", 1)[-1] not in cakey.token_id(MANAGER)
