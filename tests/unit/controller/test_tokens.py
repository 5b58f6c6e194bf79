"""Bootstrap tokens: random, stored hashed, limited by TTL, use count, revocation and glob."""

from __future__ import annotations

from pathlib import Path

import pytest

import controller.state.state as state_module
import controller.tokens as tokens_module
from agent.wire.errors import WireError
from controller.state import State
from controller.state.sqlite import SQLiteBackend
from controller.tokens import (
    BOOTSTRAP_PREFIX,
    MAX_TTL,
    create_bootstrap_token,
    digest,
    usable_token,
)

from ..helpers import FakeClock


@pytest.fixture
def store(tmp_path: Path):
    s = State(SQLiteBackend(tmp_path / "state.db"))
    yield s
    s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(tokens_module, "time", clock)
    monkeypatch.setattr(state_module, "time", clock)
    return clock


def _uses_left(store: State) -> int:
    return store.tokens()[0].uses_left


def test_secret_is_random_and_prefixed(store: State) -> None:
    a, _ = create_bootstrap_token(store, "admin:alice", 60, 1)
    b, _ = create_bootstrap_token(store, "admin:alice", 60, 1)
    assert a.startswith(BOOTSTRAP_PREFIX) and b.startswith(BOOTSTRAP_PREFIX)
    assert a != b and len(a) >= len(BOOTSTRAP_PREFIX) + 40


def test_stored_hashed_never_in_plain(store: State) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 1, "pi-*", "rack 1")
    assert token.hash == digest(secret) != secret
    assert store.token_by_hash(digest(secret)).id == token.id
    db = store.backend.path  # type: ignore[attr-defined]
    files = [db, db.with_name(db.name + "-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert token.id.encode() in raw and digest(secret).encode() in raw  # we read the right bytes
    assert secret.encode() not in raw
    assert secret.removeprefix(BOOTSTRAP_PREFIX).encode() not in raw


def test_valid_token_is_usable(store: State, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 1)
    assert usable_token(store, secret, "pi-1").id == token.id


def test_unknown_or_unprefixed_secret_refused(store: State) -> None:
    secret, _ = create_bootstrap_token(store, "admin:alice", 3600, 1)
    assert usable_token(store, secret + "x", "pi-1") is None
    assert usable_token(store, secret.removeprefix(BOOTSTRAP_PREFIX), "pi-1") is None
    assert usable_token(store, "", "pi-1") is None


def test_ttl_expiry(store: State, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 60, 5)
    assert token.expires_at == clock.now + 60
    clock.advance(59)
    assert usable_token(store, secret, "pi-1") is not None
    clock.advance(1)
    assert usable_token(store, secret, "pi-1") is None
    # Spending is refused too, even with the token id in hand.
    assert store.spend_token(token.id) is False
    assert _uses_left(store) == 5


def test_use_count(store: State, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 2)
    assert store.spend_token(token.id) and store.spend_token(token.id)
    assert usable_token(store, secret, "pi-3") is None
    assert store.spend_token(token.id) is False
    assert _uses_left(store) == 0
    store.refund_token(token.id)
    assert _uses_left(store) == 1 and usable_token(store, secret, "pi-3") is not None


def test_creation_is_audited_in_the_tokens_own_document(store: State) -> None:
    _, token = create_bootstrap_token(store, "admin:alice", 3600, 4, "pi-*", "rack 2")
    (event,) = store.events(action="token.create")
    assert (event.actor, event.reason) == ("admin:alice", "rack 2")
    assert event.detail == {"token_id": token.id, "uses": 4, "hostname_glob": "pi-*",
                            "expires_at": token.expires_at}


def test_revoked_refused(store: State, clock: FakeClock) -> None:
    secret, token = create_bootstrap_token(store, "admin:alice", 3600, 3)

    def revoke(t):  # type: ignore[no-untyped-def]
        t.revoked_at = clock.now
        t.log("admin:alice", "token.revoke")
        return t

    assert store.update_token(token.id, revoke).revoked_at == clock.now
    assert usable_token(store, secret, "pi-1") is None
    assert store.spend_token(token.id) is False
    assert store.events(action="token.revoke")[0].detail == {"token_id": token.id}


def test_unknown_token_cannot_be_spent(store: State) -> None:
    assert store.spend_token("tok_nope") is False


@pytest.mark.parametrize("glob", ["pi-*", "PiLike-0[3-8]", "pi[!x]?", "*.lan", ""])
def test_host_name_globs_are_taken(store: State, glob: str) -> None:
    _, token = create_bootstrap_token(store, "admin:alice", 60, 1, hostname_glob=glob)
    assert token.hostname_glob == glob


def test_hostname_glob(store: State, clock: FakeClock) -> None:
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
    ({"hostname_glob": "["}, "bad_hostname_glob"),  # a literal bracket: no Pi could use it
    ({"hostname_glob": "pi-0]"}, "bad_hostname_glob"),
    ({"hostname_glob": "pi_*"}, "bad_hostname_glob"),  # no host name has an underscore
    ({"hostname_glob": "pi-0[8-3]"}, "bad_hostname_glob"),  # an empty range
    ({"description": "d" * 201}, "bad_description"),
])
def test_bad_parameters_refused(store: State, kwargs: dict, code: str) -> None:
    args = {"ttl_seconds": 60, "uses": 1, **kwargs}
    with pytest.raises(WireError) as err:
        create_bootstrap_token(store, "admin:alice", **args)
    assert err.value.code == code
    assert store.tokens() == []


@pytest.mark.parametrize("kwargs", [{"ttl_seconds": True}, {"uses": True}])
def test_booleans_are_not_numbers(store: State, kwargs: dict) -> None:
    # JSON `true` must not silently become a TTL of 1 second or a single use.
    with pytest.raises(WireError):
        create_bootstrap_token(store, "admin:alice", **{"ttl_seconds": 60, "uses": 1, **kwargs})
