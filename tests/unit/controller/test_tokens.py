"""Bootstrap tokens: random, stored hashed, limited by TTL, use count, revocation and glob."""

from __future__ import annotations

from pathlib import Path

import pytest

import controller.store as store_module
import controller.tokens as tokens_module
from agent.wire.errors import WireError
from controller.store import Store
from controller.tokens import (
    BOOTSTRAP_PREFIX,
    MAX_TTL,
    create_bootstrap_token,
    digest,
    usable_token,
)

from ..helpers import FakeClock, make_node


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(tokens_module, "time", clock)
    monkeypatch.setattr(store_module, "time", clock)
    return clock


def _approve(store: Store, token_id: str, hostname: str = "pi-1"):
    node = store.create_node(make_node(hostname), "agent:x", "node.request")
    return store.approve(node.id, f"token:{token_id}", "valid bootstrap token", token_id=token_id)


def test_secret_is_random_and_prefixed(store: Store) -> None:
    a, _ = create_bootstrap_token(store, "admin:alice", 60, 1)
    b, _ = create_bootstrap_token(store, "admin:alice", 60, 1)
    assert a.startswith(BOOTSTRAP_PREFIX) and b.startswith(BOOTSTRAP_PREFIX)
    assert a != b and len(a) >= len(BOOTSTRAP_PREFIX) + 40


def test_stored_hashed_never_in_plain(store: Store) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 1, "pi-*", "rack 1")
    assert token.hash == digest(secret) != secret
    assert store.token_by_hash(digest(secret)).id == token.id
    files = [store.path, store.path.with_name(store.path.name + "-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert token.id.encode() in raw and digest(secret).encode() in raw  # we read the right bytes
    assert secret.encode() not in raw
    assert secret.removeprefix(BOOTSTRAP_PREFIX).encode() not in raw


def test_valid_token_is_usable(store: Store, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 1)
    assert usable_token(store, secret, "pi-1").id == token.id


def test_unknown_or_unprefixed_secret_refused(store: Store) -> None:
    secret, _ = create_bootstrap_token(store, "admin:alice", 3600, 1)
    assert usable_token(store, secret + "x", "pi-1") is None
    assert usable_token(store, secret.removeprefix(BOOTSTRAP_PREFIX), "pi-1") is None
    assert usable_token(store, "", "pi-1") is None


def test_ttl_expiry(store: Store, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 60, 5)
    assert token.expires_at == clock.now + 60
    clock.advance(59)
    assert usable_token(store, secret, "pi-1") is not None
    clock.advance(1)
    assert usable_token(store, secret, "pi-1") is None
    # Spending is refused too, even with the token id in hand.
    assert _approve(store, token.id) is None
    assert store.list_tokens()[0].uses_left == 5


def test_use_count(store: Store, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 2)
    first, second = _approve(store, token.id, "pi-1"), _approve(store, token.id, "pi-2")
    assert first.state == "approved" and second.state == "approved"
    assert usable_token(store, secret, "pi-3") is None
    third = store.create_node(make_node("pi-3"), "agent:x", "node.request")
    assert store.approve(third.id, "token:x", "valid bootstrap token", token_id=token.id) is None
    assert store.get_node(third.id).state == "pending"
    assert store.list_tokens()[0].uses_left == 0


def test_approval_by_token_is_audited(store: Store, clock: FakeClock) -> None:
    _, token = create_bootstrap_token(store, "admin:alice", 3600, 1)
    node = _approve(store, token.id)
    last = store.list_audit(node_id=node.id)[0]
    assert last["action"] == "node.approve" and last["detail"]["token_id"] == token.id


def test_revoked_refused(store: Store, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 3)
    revoked = store.revoke_token(token.id, "admin:alice")
    assert revoked.revoked_at == clock.now
    assert usable_token(store, secret, "pi-1") is None
    assert _approve(store, token.id) is None
    assert store.list_audit(action="token.revoke")[0]["detail"] == {"token_id": token.id}


def test_revoke_unknown_is_none(store: Store) -> None:
    assert store.revoke_token("tok_nope", "admin:alice") is None


def test_hostname_glob(store: Store, clock: FakeClock) -> None:
    secret, _ = create_bootstrap_token(store, "admin:alice", 3600, 5, hostname_glob="PiLike-*")
    assert usable_token(store, secret, "PiLike-03") is not None
    assert usable_token(store, secret, "pilike-04") is not None
    assert usable_token(store, secret, "mgr-1") is None
    assert usable_token(store, secret, "xPiLike-03") is None


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"ttl_seconds": 0}, "bad_ttl"),
    ({"ttl_seconds": -5}, "bad_ttl"),
    ({"ttl_seconds": MAX_TTL + 1}, "bad_ttl"),
    ({"ttl_seconds": 60.5}, "bad_ttl"),
    ({"ttl_seconds": "60"}, "bad_ttl"),
    ({"uses": 0}, "bad_uses"),
    ({"uses": 100_001}, "bad_uses"),
    ({"uses": "1"}, "bad_uses"),
    ({"hostname_glob": 5}, "bad_hostname_glob"),
    ({"hostname_glob": "x" * 254}, "bad_hostname_glob"),
    ({"description": "d" * 201}, "bad_description"),
])
def test_bad_parameters_refused(store: Store, kwargs: dict, code: str) -> None:
    args = {"ttl_seconds": 60, "uses": 1, **kwargs}
    with pytest.raises(WireError) as err:
        create_bootstrap_token(store, "admin:alice", **args)
    assert err.value.code == code
    assert store.list_tokens() == []


@pytest.mark.parametrize("kwargs", [{"ttl_seconds": True}, {"uses": True}])
def test_booleans_are_not_numbers(store: Store, kwargs: dict) -> None:
    # JSON `true` must not silently become a TTL of 1 second or a single use.
    with pytest.raises(WireError):
        create_bootstrap_token(store, "admin:alice", **{"ttl_seconds": 60, "uses": 1, **kwargs})
