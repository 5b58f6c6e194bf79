"""The cluster state in the swarm's own Raft store, on real dockerds: three managers, each
with its own view of the same documents, compare-and-swap, events, limits, quorum.

A lab of its own (prefix `sestate-`, 198.18.2.0/24), so that the session's lab is not
touched; torn down at the end of the module whatever happens.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.wire.errors import WireError
from controller.dockerapi import DockerAPI
from controller.state import (
    Conflict,
    HostDoc,
    Record,
    State,
    StoreUnavailable,
    Unchanged,
    new_id,
)
from controller.state.backend import TooLarge
from controller.state.shelves import SHELF_DOCS, is_shelf
from controller.state.swarm import (
    DATA,
    DOC_LABEL,
    KEY_LABEL,
    STATE_LABEL,
    SwarmBackend,
    config_name,
)
from deploy.lab.config import load_cluster
from deploy.lab.demo import wait_for
from deploy.lab.lab import Lab


def make_record(hostname: str) -> Record:
    return Record(new_id("enr"), hostname, "hw-" + secrets.token_hex(3),
                  secrets.token_urlsafe(32), "{}", "pending", "worker")

pytestmark = pytest.mark.lab

NAMES = ("PiState-1", "PiState-2", "PiState-3")
SUBNET = "198.18.2.0/24"


def ip(i: int) -> str:
    return f"198.18.2.{11 + i}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    d = tmp_path_factory.mktemp("state-cluster")
    lines = ["[lab]", f'subnet = "{SUBNET}"']
    for i, name in enumerate(NAMES):
        lines += ["", "[[pi]]", f'name = "{name}"', f'hardware_id = "00000000ab{i:06x}"',
                  'model = "Raspberry Pi 3 Model B Rev 1.2"', 'arch = "armv7l"']
    (d / "cluster.toml").write_text("\n".join(lines) + "\n")
    the_lab = Lab(Path("/var/lib/swarm-enroll-statetest"), prefix="sestate-")
    try:
        the_lab.up(load_cluster(d / "cluster.toml"), controller=False, agents=False)
        first = the_lab.docker(NAMES[0])
        first.swarm.init(advertise_addr=ip(0), listen_addr="0.0.0.0:2377")
        token = first.swarm.attrs["JoinTokens"]["Manager"]
        for i, name in enumerate(NAMES[1:], start=1):
            the_lab.docker(name).swarm.join(remote_addrs=[f"{ip(0)}:2377"], join_token=token,
                                            advertise_addr=ip(i), listen_addr="0.0.0.0:2377")
        yield the_lab
    finally:
        the_lab.down()


def api(lab: Lab, name: str) -> DockerAPI:
    return DockerAPI(lab.docker_host(name), timeout=60)


@pytest.fixture
def backends(lab: Lab) -> Iterator[list[SwarmBackend]]:
    made = [SwarmBackend(api(lab, name)) for name in NAMES[:2]]
    yield made
    for backend in made:
        backend.close()


def test_compare_and_swap_across_managers(backends: list[SwarmBackend]) -> None:
    one, two = backends
    one.create("test/cas", {"n": 1})  # its new version is not said: read it
    first = one.get("test/cas")
    with pytest.raises(Conflict):
        two.create("test/cas", {"n": 2})
    seen = two.get("test/cas")
    assert seen == first
    two.update(seen, {"n": 2})
    second = two.get("test/cas")
    assert second.version > first.version
    with pytest.raises(Conflict):  # one still holds the first version
        one.update(first, {"n": 3})
    assert one.get("test/cas").body == {"n": 2}
    with pytest.raises(Conflict):
        one.delete(first)
    one.delete(second)
    assert two.get("test/cas") is None


def test_long_keys_and_large_documents(backends: list[SwarmBackend]) -> None:
    one, _ = backends
    key = "host/" + ".".join(["a" * 63] * 3) + ".b"  # a 253-character hostname
    assert len(config_name(key)) <= 64
    big = {"records": ["x" * 1000] * 300}  # 300 KB, far beyond any bounded document
    one.create(key, big)
    stored = one.get(key)
    assert stored.body == big and stored.key == key
    with pytest.raises(TooLarge):  # Raft refuses a message of about 1.5 MB
        one.update(stored, {"records": ["x" * 1000] * 2000})
    assert one.get(key).body == big  # refused whole: nothing half-written
    one.delete(one.get(key))


def test_two_controllers_race_for_one_name_and_one_record_wins(lab: Lab) -> None:
    states = [State(SwarmBackend(api(lab, name))) for name in NAMES]
    winners: list[str] = []
    start = threading.Barrier(9)

    def claim(state: State) -> None:
        record = make_record("PiRace-1")

        def change(doc: HostDoc) -> Record:
            if doc.active():
                raise Unchanged(doc.active()[0])
            return doc.add(record, "agent:x", "node.request")

        start.wait()
        winners.append(state.update_host("PiRace-1", change).id)

    try:
        threads = [threading.Thread(target=claim, args=(s,)) for s in states * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(winners)) == 1
        raw = api(lab, NAMES[2]).inspect_config(config_name("host/pirace-1"))
        assert DOC_LABEL in raw["Spec"]["Labels"]
        # the third controller's memory has it too, from the config events alone
        wait_for("the write in every controller's memory", lambda: all(
            s.record(winners[0]) is not None for s in states), 30, interval=0.2)
    finally:
        for s in states:
            s.close()


def shelving(lab: Lab, name: str) -> SwarmBackend:
    """A backend that puts new hostnames on shelves, as every controller's does once all
    of them read shelves."""
    return SwarmBackend(api(lab, name), shelve=lambda: True)


def claim(state: State, hostname: str) -> str:
    """A first request for the name, unless one is open already: the open record's id."""
    record = make_record(hostname)

    def change(doc: HostDoc) -> Record:
        if doc.active():
            raise Unchanged(doc.active()[0])
        return doc.add(record, "agent:x", "node.request")

    return state.update_host(hostname, change).id


def test_new_hostnames_share_writes_and_each_name_still_ends_in_one_record(
        lab: Lab) -> None:
    """A fleet enrolling at once through three controllers, every name asked for through
    each of them at the same moment: each name ends in exactly one record, the documents
    share configs (shelves, more than one of them), and every controller's memory has
    them all, from the config events."""
    states = [State(shelving(lab, name)) for name in NAMES]
    names = [f"PiShelf-{i}" for i in range(3 * SHELF_DOCS)]
    won: dict[str, list[str]] = {name: [] for name in names}
    start = threading.Barrier(len(states) * len(names))

    def race(state: State, hostname: str) -> None:
        start.wait()
        won[hostname].append(claim(state, hostname))

    try:
        threads = [threading.Thread(target=race, args=(s, n)) for s in states for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(ids) == len(states) and len(set(ids)) == 1 for ids in won.values())
        configs = api(lab, NAMES[2]).configs(filters={"label": [STATE_LABEL]})
        shelves = [c for c in configs if is_shelf(c) and any(
            f"host/{n.lower()}" in k for n in names for k in c["Spec"]["Labels"])]
        on_shelves = sum(1 for c in shelves for k in c["Spec"]["Labels"]
                         if k.startswith("swarm-enroll.doc:host/pishelf-"))
        assert on_shelves == len(names) and 3 <= len(shelves) < len(names)
        for name in names:  # none has a config of its own
            assert not [c for c in configs if c["Spec"]["Name"] == config_name(
                f"host/{name.lower()}")]
        wait_for("every record in every controller's memory", lambda: all(
            s.record(ids[0]) is not None for s in states for ids in won.values()), 30,
            interval=0.2)
    finally:
        for s in states:
            s.close()


def test_a_document_on_a_shelf_changes_under_the_shelfs_version(lab: Lab) -> None:
    """Neighbours on one shelf: a write of one makes a write of the other on the shelf's
    older version refused (read again, never lost); a closed shelf left empty stays
    closed."""
    one, two = shelving(lab, NAMES[0]), shelving(lab, NAMES[1])
    try:
        keys = [f"host/pifill-{i}" for i in range(2 * SHELF_DOCS)]
        for key in keys:
            one.create(key, {"key": key})
        ka, kb = next((x, y) for x, y in itertools.pairwise(keys)
                      if one._id_of[x] == one._id_of[y])  # neighbours on one shelf
        a, b = two.get(ka), two.get(kb)
        assert a.version == b.version  # the shelf's
        two.update(a, {"key": ka, "n": 2})
        with pytest.raises(Conflict):
            two.update(b, {"key": kb, "n": 3})
        two.update(two.get(kb), {"key": kb, "n": 3})
        assert one.get(ka).body == {"key": ka, "n": 2}
        assert one.get(kb).body == {"key": kb, "n": 3}
        with pytest.raises(Conflict):  # taken, on a shelf
            two.create(keys[0], {"again": True})
        # the first shelf of these is closed now: emptied, it stays closed, and a name
        # freed is taken again on the open shelf
        first = one._id_of[keys[0]]
        on_it = sorted(one._keys_at[first])
        assert one._shelves[first].closed
        for key in on_it:
            one.delete(one.get(key))
        raw = api(lab, NAMES[2]).inspect_config(first)["Spec"]["Labels"]
        assert raw["swarm-enroll.shelf"] == "closed" and not [
            k for k in raw if k.startswith("swarm-enroll.doc:")]
        assert all(two.get(key) is None for key in on_it)
        two.create(keys[0], {"back": True})
        assert one.get(keys[0]).body == {"back": True} and one._id_of[keys[0]] != first
        for key in keys:
            if (stored := one.get(key)) is not None:
                one.delete(stored)
    finally:
        one.close()
        two.close()


def test_a_hostname_stored_before_shelves_keeps_its_config(lab: Lab) -> None:
    """Written by a controller without shelves (an earlier version), a hostname's
    document stays in its own config: one with shelves neither takes the name again nor
    moves it."""
    before = State(SwarmBackend(api(lab, NAMES[0])))
    after = State(shelving(lab, NAMES[1]))
    try:
        first = claim(before, "PiLegacy-1")
        assert claim(after, "PiLegacy-1") == first
        after.update_host("PiLegacy-1", lambda doc: doc.change(
            doc.get(first), "admin:a", "node.approve", state="approved"))
        raw = api(lab, NAMES[2]).inspect_config(config_name("host/pilegacy-1"))
        assert '"approved"' in raw["Spec"]["Labels"][DOC_LABEL]
        wait_for("the approval", lambda: before.record(first).state == "approved", 30,
                 interval=0.2)
    finally:
        before.close()
        after.close()


def test_writes_elsewhere_reach_memory_through_events(lab: Lab) -> None:
    watcher = State(SwarmBackend(api(lab, NAMES[0])))
    writer = State(SwarmBackend(api(lab, NAMES[1])))
    try:
        record = writer.update_host("PiEvent-1", lambda doc: doc.add(
            make_record("PiEvent-1"), "agent:x", "node.request"))
        wait_for("the new record", lambda: watcher.record(record.id) is not None, 30,
                 interval=0.2)
        writer.update_host("PiEvent-1", lambda doc: doc.change(
            doc.get(record.id), "admin:a", "node.approve", state="approved"))
        wait_for("the approval", lambda: watcher.record(record.id).state == "approved", 30,
                 interval=0.2)
    finally:
        watcher.close()
        writer.close()


def bad_document(lab: Lab, key: str) -> None:
    """A config with our labels but a document no controller can read (made by hand)."""
    api(lab, NAMES[1]).create_config(config_name(key), DATA, {
        STATE_LABEL: "1", KEY_LABEL: key, DOC_LABEL: "[" * 5000})


def test_malformed_documents_are_skipped_and_the_reread_finds_what_events_missed(
        lab: Lab) -> None:
    bad_document(lab, "host/pibad-1")
    watcher = State(SwarmBackend(api(lab, NAMES[0])))  # starts despite it
    writer = State(SwarmBackend(api(lab, NAMES[2])))
    try:
        bad_document(lab, "host/pibad-2")  # its event is read and skipped, nothing more
        record = writer.update_host("PiReread-1", lambda doc: doc.add(
            make_record("PiReread-1"), "agent:x", "node.request"))
        wait_for("the new record", lambda: watcher.record(record.id) is not None, 30,
                 interval=0.2)
        assert watcher.doc("host/pibad-1") is None and watcher.doc("host/pibad-2") is None
        # Docker dropped an event of the watcher's own write: the next event of that config
        # (the writer's) is taken for it and skipped.
        backend = watcher.backend
        name = config_name("host/pireread-1")
        backend._own[name] = [time.monotonic()]  # as a write of ours leaves it, event due
        writer.update_host("PiReread-1", lambda doc: doc.change(
            doc.get(record.id), "admin:a", "node.approve", state="approved"))
        wait_for("the writer's event", lambda: name not in backend._own, 30, interval=0.2)
        assert watcher.record(record.id).state == "pending"
        took = time.process_time()
        backend._resync(watcher._changed, moved_only=True)  # what runs every REREAD_EVERY
        print(f"a re-read of {len(api(lab, NAMES[0]).configs())} configs took "
              f"{(time.process_time() - took) * 1000:.1f} ms CPU")
        assert watcher.record(record.id).state == "approved"
    finally:
        watcher.close()
        writer.close()


def test_without_quorum_writes_fail_whole_and_say_why(lab: Lab) -> None:
    """Last: two of the three managers go, and with them the quorum. Writes are refused
    whole (a 503 to whoever asked), and memory still answers what was written before."""
    state = State(SwarmBackend(api(lab, NAMES[0])))
    try:
        record = state.update_host("PiQuorum-1", lambda doc: doc.add(
            make_record("PiQuorum-1"), "agent:x", "node.request"))
        lab.kill_pi(NAMES[1])
        lab.kill_pi(NAMES[2])
        started = time.monotonic()

        def refused() -> WireError | None:
            try:
                state.update_host("PiQuorum-1", lambda doc: doc.log("admin:a", "node.note"))
            except WireError as exc:
                return exc
            return None

        err = wait_for("a write refused for want of quorum", refused, 120, interval=1)
        print(f"writes refused {time.monotonic() - started:.1f}s after losing quorum")
        assert (err.code, err.status) == ("quorum_lost", 503)
        assert "force-new-cluster" in err.message
        assert state.record(record.id) is not None  # from memory
        with pytest.raises(StoreUnavailable):  # the store itself answers nothing now
            state.backend.get("host/piquorum-1")
    finally:
        state.close()
