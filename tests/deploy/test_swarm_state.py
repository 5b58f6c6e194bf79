"""The cluster state in the swarm's own Raft store, on real dockerds: three managers, each
with its own view of the same documents, compare-and-swap, events, limits, quorum.

A lab of its own (prefix `sestate-`, 198.18.2.0/24), so that the session's lab is not
touched; torn down at the end of the module whatever happens.
"""

from __future__ import annotations

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
