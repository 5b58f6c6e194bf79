"""Before a controller serves: its config from Docker (a manager promoted later), the
single-controller state.db imported once, the CA key shared sealed and taken."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import cakey
from controller.bootstrap import (
    config_from_docker,
    forget_keys,
    import_single,
    reseal_if_rotated,
    share_ca,
)
from controller.config import ConfigError, parse_config
from controller.pki import create_ca
from controller.state import State
from controller.state.sqlite import SQLiteBackend
from controller.swarm import SwarmError

from ..helpers import FakeSwarm, make_record


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[State]:
    """Stands in for the swarm's shared state (the same documents, in a file)."""
    s = State(SQLiteBackend(tmp_path / "shared.db"))
    yield s
    s.close()


def first_controller(tmp_path: Path, name: str = "first", n: int = 1) -> object:
    """A controller whose state dir holds a CA of its own (made by its `init`)."""
    d = tmp_path / name
    d.mkdir()
    config = parse_config(d, {"advertise_addr": f"10.0.0.{n}", "hostname": f"ctl-{n}"})
    create_ca(config.ca_cert, config.ca_key, name)
    return config


def test_a_promoted_manager_writes_its_config_from_docker(tmp_path: Path) -> None:
    swarm = FakeSwarm()
    config = config_from_docker(tmp_path / "new", swarm, {"docker_host": "unix:///x.sock"})
    assert (config.advertise_addr, config.hostname) == (swarm.local_node.addr, "ctl-1")
    assert (tmp_path / "new" / "controller.toml").exists()
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0
    swarm.fail_local = SwarmError("not_a_manager", "the local Docker daemon is not a swarm "
                                  "manager", 503)
    with pytest.raises(ConfigError, match="not a swarm manager"):
        config_from_docker(tmp_path / "worker", swarm, {})


def test_the_ca_key_goes_sealed_to_the_next_manager(tmp_path: Path, shared: State) -> None:
    swarm = FakeSwarm()
    first = first_controller(tmp_path)
    share_ca(first, shared, swarm)
    doc = shared.doc(cakey.KEY)
    assert doc is not None and "PRIVATE KEY" not in str(doc)
    assert first.tls_cert.exists()
    second = parse_config(tmp_path, {"advertise_addr": "10.0.0.2", "hostname": "ctl-2"})
    share_ca(second, shared, swarm)
    assert second.ca_key.read_bytes() == first.ca_key.read_bytes()
    assert second.ca_key.stat().st_mode & 0o077 == 0 and second.tls_key.exists()


def test_a_demoted_manager_gives_up_the_keys_and_a_promotion_brings_them_back(
        tmp_path: Path, shared: State) -> None:
    swarm = FakeSwarm()
    first = first_controller(tmp_path)
    share_ca(first, shared, swarm)
    key = first.ca_key.read_bytes()
    forget_keys(first)
    assert not first.ca_key.exists() and not first.tls_key.exists()
    assert first.ca_cert.exists()  # the CA certificate is public
    share_ca(first, shared, swarm)  # promoted again
    assert first.ca_key.read_bytes() == key and first.tls_key.exists()


def test_no_ca_in_the_swarm_yet_says_what_to_do(tmp_path: Path, shared: State) -> None:
    config = parse_config(tmp_path, {"advertise_addr": "10.0.0.2", "hostname": "ctl-2"})
    with pytest.raises(ConfigError, match="enroll-controller init"):
        share_ca(config, shared, FakeSwarm())


def test_a_rotated_manager_token_is_sealed_again(tmp_path: Path, shared: State) -> None:
    swarm = FakeSwarm()
    first = first_controller(tmp_path)
    share_ca(first, shared, swarm)
    before = shared.doc(cakey.KEY)
    reseal_if_rotated(first, shared, swarm)
    assert shared.doc(cakey.KEY) == before  # nothing rotated: nothing written
    swarm.manager_join_token = "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25
    reseal_if_rotated(first, shared, swarm)
    after = cakey.Wrapped.from_json(shared.doc(cakey.KEY))
    assert after.token_id == cakey.token_id(swarm.manager_join_token)
    assert shared.events(action="ca.reseal")


def test_a_single_controller_state_is_imported_once(tmp_path: Path, shared: State) -> None:
    config = parse_config(tmp_path, {"advertise_addr": "10.0.0.1", "hostname": "ctl-1"})
    old = State(SQLiteBackend(config.database))
    record = make_record("PiLike-03", state="joined")
    old.update_host("PiLike-03", lambda doc: doc.add(record, "agent:x", "node.request"))
    old.add_admin("admin", "d" * 64)
    old.close()
    # the shared state already knows PiLike-03 (another controller imported it first)
    theirs = make_record("PiLike-03", state="joined")
    shared.update_host("PiLike-03", lambda doc: doc.add(theirs, "agent:y", "node.request"))
    added = import_single(config, shared)
    assert added == {"admin": 1, "audit": 1}
    assert [r.id for r in shared.host("PiLike-03").records] == [theirs.id]  # not overwritten
    assert shared.admin_by_hash("d" * 64) == "admin"
    assert not config.database.exists()
    assert (tmp_path / "state.db.imported").exists()
    assert import_single(config, shared) == {}  # once
    (event,) = shared.events(action="state.import")
    assert "admin" in event.reason


def another_controller(tmp_path: Path) -> object:
    """One with another CA (left from another swarm, or a second init)."""
    return first_controller(tmp_path, "another", 2)


@pytest.mark.parametrize("rotated", [False, True])
def test_a_controller_never_replaces_the_swarms_ca_with_another(
        tmp_path: Path, shared: State, caplog: pytest.LogCaptureFixture, rotated: bool) -> None:
    swarm = FakeSwarm()
    share_ca(first_controller(tmp_path), shared, swarm)
    before = shared.doc(cakey.KEY)
    if rotated:  # the path that seals the key again
        swarm.manager_join_token = "SWMTKN-1-" + "a" * 50 + "-" + "b" * 25
    with pytest.raises(ConfigError, match="refusing to replace the swarm's CA") as refused:
        share_ca(another_controller(tmp_path), shared, swarm)
    assert "move ca.pem, ca-key.pem, tls.pem and tls-key.pem" in str(refused.value)
    assert shared.doc(cakey.KEY) == before
    assert [r.levelname for r in caplog.records if "refusing" in r.message] == ["ERROR"]


def test_of_two_controllers_with_different_cas_starting_at_once_the_first_write_wins(
        tmp_path: Path, shared: State) -> None:
    """The second one read no CA yet, and finds the first one's only on writing its own."""
    other = State(SQLiteBackend(tmp_path / "shared.db"))  # read before the first one wrote
    try:
        swarm = FakeSwarm()
        share_ca(first_controller(tmp_path), shared, swarm)
        before = shared.doc(cakey.KEY)
        assert other.doc(cakey.KEY) is None
        with pytest.raises(ConfigError, match="refusing to replace the swarm's CA"):
            share_ca(another_controller(tmp_path), other, swarm)
        shared.refresh(cakey.KEY)
        assert shared.doc(cakey.KEY) == before
    finally:
        other.close()
