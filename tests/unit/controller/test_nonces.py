"""Nonces: single use, short-lived, bounded in number."""

from __future__ import annotations

import pytest

import controller.nonces as nonces_module
from controller.nonces import NonceStore

from ..helpers import FakeClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock(100.0)
    monkeypatch.setattr(nonces_module, "time", clock)
    return clock


def test_single_use() -> None:
    nonces = NonceStore()
    nonce = nonces.issue()
    assert nonces.spend(nonce) is True
    assert nonces.spend(nonce) is False


def test_unknown_refused() -> None:
    nonces = NonceStore()
    nonces.issue()
    assert nonces.spend("made-up") is False
    assert nonces.spend("") is False


def test_nonces_are_distinct() -> None:
    nonces = NonceStore()
    issued = {nonces.issue() for _ in range(200)}
    assert len(issued) == 200


def test_expiry(clock: FakeClock) -> None:
    nonces = NonceStore(ttl=120.0)
    fresh, stale = nonces.issue(), nonces.issue()
    clock.advance(119.9)
    assert nonces.spend(fresh) is True
    clock.advance(0.1)
    assert nonces.spend(stale) is False


def test_expired_nonce_stays_refused(clock: FakeClock) -> None:
    nonces = NonceStore(ttl=10.0)
    nonce = nonces.issue()
    clock.advance(11)
    nonces.issue()  # purges
    assert nonces.spend(nonce) is False


def test_capacity_drops_oldest(clock: FakeClock) -> None:
    nonces = NonceStore(capacity=3)
    issued = [nonces.issue() for _ in range(4)]
    assert len(nonces._issued) == 3
    assert nonces.spend(issued[0]) is False
    assert all(nonces.spend(n) for n in issued[1:])
