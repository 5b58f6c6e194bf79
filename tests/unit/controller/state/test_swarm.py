"""Which config events the swarm backend reads back: other writers' only (pure logic; the
store itself is tested against real managers in tests/deploy/test_swarm_state.py)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

import controller.state.swarm as swarm_module
from controller.dockerapi import APIError
from controller.state import APPROVED, JOINED, HostDoc
from controller.state.backend import Conflict, Stored, dump
from controller.state.shelves import shelf_labels, shelf_name
from controller.state.swarm import DOC_LABEL, KEY_LABEL, STATE_LABEL, SwarmBackend, config_name

from ...helpers import make_record


class Api:
    """Just what create/update call, answering as Docker does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        self.calls.append("create")
        return {"ID": "cfg1"}

    def update_config(self, ref: str, version: int, spec: dict[str, Any]) -> None:
        self.calls.append("update")

    def configs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("read")
        return []


def event(action: str = "update", config_id: str = "cfg1") -> dict[str, Any]:
    return {"Type": "config", "Action": action,
            "Actor": {"ID": config_id, "Attributes": {"name": config_name("host/pi-1")}}}


def flushed(backend: SwarmBackend) -> None:
    flusher = backend._flusher
    if flusher is not None:
        flusher.join(timeout=5)


def test_our_writes_cost_one_call_and_their_events_no_read() -> None:
    api = Api()
    backend = SwarmBackend(api)
    created = backend.create("host/pi-1", {"hostname": "pi-1"})
    backend.update(created, {"hostname": "pi-1", "records": []})
    assert api.calls == ["create", "update"]  # no read of what we wrote
    heard: list[str] = []
    for action in ("create", "update"):
        backend._event(event(action), lambda key, stored: heard.append(key))
    assert backend._dirty == {} and heard == []
    backend._stop.set()  # the read of another's write happens at once
    backend._event(event("update"), lambda key, stored: heard.append(key))  # another's
    flushed(backend)
    assert api.calls == ["create", "update", "read"]


class EarlyEvents(Api):
    """Docker's event of a write can reach the events thread before its answer does."""

    backend: SwarmBackend

    def update_config(self, ref: str, version: int, spec: dict[str, Any]) -> None:
        self.backend._event(event("update"), lambda key, stored: None)
        super().update_config(ref, version, spec)


def test_our_event_before_dockers_answer_leaves_the_next_writers_event_to_be_read() -> None:
    api = EarlyEvents()
    backend = api.backend = SwarmBackend(api)
    backend._keys_at["cfg1"], backend._id_of["host/pi-1"] = {"host/pi-1"}, "cfg1"
    backend.update(Stored("host/pi-1", 3, dump({})), {"hostname": "pi-1"})
    assert api.calls == ["update"] and backend._own == {}  # its event came, and was ours
    backend._stop.set()
    backend._event(event("update"), lambda key, stored: None)  # another controller's write
    flushed(backend)
    assert api.calls == ["update", "read"]


def test_a_write_that_fails_expects_no_event() -> None:
    class Refusing(Api):
        def update_config(self, ref: str, version: int, spec: dict[str, Any]) -> None:
            raise APIError(500, "rpc error: code = Unknown desc = update out of sequence")

    backend = SwarmBackend(Refusing())
    with pytest.raises(Conflict):
        backend.update(Stored("host/pi-1", 3, dump({})), {"hostname": "pi-1"})
    assert backend._own == {}
    backend._stop.set()


def test_an_event_of_ours_not_heard_in_time_is_no_longer_expected(monkeypatch: Any) -> None:
    backend = SwarmBackend(Api())
    backend.create("host/pi-1", {"hostname": "pi-1"})
    monkeypatch.setattr(swarm_module, "OWN_EVENT_WAIT", 0.0)
    backend._stop.set()
    backend._event(event("create"), lambda key, stored: None)
    flushed(backend)
    assert backend.api.calls == ["create", "read"]


def config(config_id: str, key: str, version: int, body: Any) -> dict[str, Any]:
    """A config as Docker lists it, the document in its label."""
    doc = body if isinstance(body, str) else json.dumps(body)
    return {"ID": config_id, "Version": {"Index": version},
            "Spec": {"Name": config_name(key), "Labels": {
                STATE_LABEL: "1", KEY_LABEL: key, DOC_LABEL: doc}}}


class Store(Api):
    """Configs to list; while `leaderless`, every read fails as Docker's does then."""

    def __init__(self, *configs: dict[str, Any]) -> None:
        super().__init__()
        self.stored = {c["ID"]: c for c in configs}
        self.leaderless = 0  # reads still to fail

    def configs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("read")
        if self.leaderless:
            self.leaderless -= 1
            raise APIError(500, "rpc error: The swarm does not have a leader")
        ids = filters.get("id")
        return [c for i, c in self.stored.items() if ids is None or i in ids]


class Heard:
    """What the backend hands on, as State._changed would take it."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, Any]] = []

    def __call__(self, key: str, stored: Stored | None) -> None:
        self.docs.append((key, stored.body if stored else None))


def test_configs_not_read_for_want_of_a_leader_are_read_once_there_is_one(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(swarm_module, "FLUSH_DELAY", 0.0)
    monkeypatch.setattr(swarm_module, "RETRY_FIRST", 0.01)
    api = Store(config("cfg1", "host/pi-1", 9, {"hostname": "pi-1", "v": 2}))
    api.leaderless = 3  # a failover
    backend = SwarmBackend(api)
    heard = Heard()
    backend._event(event("update"), heard)
    flushed(backend)
    assert heard.docs == [("host/pi-1", {"hostname": "pi-1", "v": 2})]
    assert api.calls == ["read"] * 4 and backend._dirty == {}


def test_a_stream_of_other_writers_events_is_read_once_per_pause_not_once_per_event(
        monkeypatch: Any) -> None:
    """A fleet enrolling through another controller: each read goes through the Raft
    leader's daemon, so while the events keep coming they are read in one batch per
    FLUSH_EVERY."""
    monkeypatch.setattr(swarm_module, "FLUSH_DELAY", 0.0)
    monkeypatch.setattr(swarm_module, "FLUSH_EVERY", 1.0)
    api = Store(*(config(f"c{i}", f"host/pi-{i}", 1, {"hostname": f"pi-{i}"})
                  for i in range(6)))
    backend = SwarmBackend(api)
    heard = Heard()
    backend._event(event("update", "c0"), heard)
    deadline = time.monotonic() + 5
    while not heard.docs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.calls == ["read"]  # the first at once
    for i in range(1, 6):  # then writes 10 ms apart, as a storm makes them
        backend._event(event("update", f"c{i}"), heard)
        time.sleep(0.01)
    flushed(backend)
    assert api.calls == ["read", "read"]
    assert sorted(key for key, _ in heard.docs) == [f"host/pi-{i}" for i in range(6)]


def test_under_a_backlog_the_configs_named_first_are_read_first(monkeypatch: Any) -> None:
    """More events than one read takes: those that waited longest go in the next read,
    whatever their ids (sorted ids would leave a high one behind while lower ones keep
    coming)."""
    monkeypatch.setattr(swarm_module, "FLUSH_BATCH", 2)
    monkeypatch.setattr(swarm_module, "FLUSH_DELAY", 0.5)  # the three events come meanwhile
    monkeypatch.setattr(swarm_module, "FLUSH_EVERY", 0.0)
    api = Store()
    backend = SwarmBackend(api)
    read: list[list[str]] = []
    api.configs = lambda filters: read.append(filters["id"]) or []  # type: ignore[method-assign]
    for config_id in ("z9", "a1", "m5"):
        backend._event(event("update", config_id), Heard())
    flushed(backend)
    assert read == [["z9", "a1"], ["m5"]]


def test_a_late_remove_of_an_old_config_leaves_the_document_made_again() -> None:
    api = Store(config("old", "host/pi-1", 3, {"hostname": "pi-1"}))
    backend = SwarmBackend(api)
    backend.load_all()
    backend.create("host/pi-1", {"hostname": "pi-1", "again": True})  # now config cfg1
    heard = Heard()
    backend._event(event("remove", "old"), heard)
    assert heard.docs == []
    backend._event(event("remove", "cfg1"), heard)  # the document's own config: gone
    assert heard.docs == [("host/pi-1", None)]


def test_the_periodic_reread_finds_a_write_whose_event_passed_for_ours() -> None:
    """Our write's event was dropped (a slow subscriber); another controller's write to
    the same config came next and was skipped as ours: the re-read hands it on."""
    api = Store(config("cfg1", "host/pi-1", 3, {"hostname": "pi-1"}))
    backend = SwarmBackend(api)
    backend.load_all()
    old = Stored("host/pi-1", 3, dump({"hostname": "pi-1"}))
    backend.update(old, {"hostname": "pi-1", "by": "us"})
    api.stored["cfg1"] = config("cfg1", "host/pi-1", 5, {"hostname": "pi-1", "by": "them"})
    heard = Heard()
    backend._event(event("update"), heard)  # theirs, taken for ours
    assert heard.docs == [] and backend._dirty == {}
    backend._resync(heard, moved_only=True)
    assert heard.docs == [("host/pi-1", {"hostname": "pi-1", "by": "them"})]


def test_a_reread_hands_on_only_what_moved_and_what_went() -> None:
    docs = [config(f"c{i}", f"host/pi-{i}", 1, {"hostname": f"pi-{i}"}) for i in range(3)]
    api = Store(*docs)
    backend = SwarmBackend(api)
    backend.load_all()
    api.stored["c1"] = config("c1", "host/pi-1", 2, {"hostname": "pi-1", "new": 1})
    del api.stored["c2"]  # its remove event was lost
    heard = Heard()
    backend._resync(heard, moved_only=True)
    assert heard.docs == [("host/pi-1", {"hostname": "pi-1", "new": 1}), ("host/pi-2", None)]
    heard.docs.clear()
    backend._resync(heard, moved_only=True)
    assert heard.docs == []


def test_malformed_configs_are_skipped_not_the_rest_of_the_batch(monkeypatch: Any) -> None:
    monkeypatch.setattr(swarm_module, "FLUSH_DELAY", 0.0)
    api = Store(config("a", "host/a", 1, "{not json"),
                config("b", "host/b", 1, "[" * 5000 + "]" * 5000),
                config("c", "host/c", 1, "[1, 2]"),
                config("cfg1", "host/pi-1", 1, {"hostname": "pi-1"}))
    api.stored["d"] = {"ID": "d", "Spec": {"Labels": {STATE_LABEL: "1"}}}
    backend = SwarmBackend(api)
    assert [s.key for s in backend.load_all()] == ["host/pi-1"]
    heard = Heard()

    def choking(key: str, stored: Stored | None) -> None:
        if key == "host/a":
            raise RuntimeError("a state that cannot take it")
        heard(key, stored)

    api.stored["a"] = config("a", "host/a", 2, {"hostname": "a"})
    for config_id in ("a", "b", "cfg1"):
        backend._event(event("update", config_id), choking)
    flushed(backend)
    assert heard.docs == [("host/pi-1", {"hostname": "pi-1"})]


class Listing(Store):
    """Answers with JSON text parsed on every call, as the Docker SDK does."""

    def configs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("read")
        return json.loads(self.text)  # type: ignore[no-any-return]


def test_a_reread_of_5000_unchanged_documents_hands_on_nothing() -> None:
    """Run with -s for the CPU one re-read takes (README: Every manager runs the
    controller)."""
    api = Listing()
    doc = HostDoc("pi-x")  # a joined Pi's document, as enrollment writes it
    record = doc.add(make_record("pi-x", public_jwk="{" + "k" * 120 + "}"), "agent:x",
                     "node.request")
    doc.change(record, "token:t", "node.approve", "valid bootstrap token", state=APPROVED)
    doc.change(record, "agent:x", "node.joined", "swarm node x", state=JOINED)
    text = json.dumps(doc.to_json())
    docs = [config(f"c{i}", f"host/pi-{i}", 10, text.replace("pi-x", f"pi-{i}"))
            for i in range(5000)]
    api.text = json.dumps(docs)
    backend = SwarmBackend(api)
    took = time.process_time()
    assert len(backend.load_all()) == 5000
    took, first = time.process_time(), time.process_time() - took
    heard = Heard()
    backend._resync(heard, moved_only=True)
    again = time.process_time() - took
    assert heard.docs == []
    print(f"\n5,000 documents ({len(api.text) / 1e6:.1f} MB listed): first read "
          f"{first * 1000:.0f} ms CPU, a re-read with nothing changed {again * 1000:.0f} ms CPU")


def shelf(config_id: str, number: int, version: int, docs: dict[str, Any],
          closed: bool = False) -> dict[str, Any]:
    """A shelf as Docker lists it: several documents, a label each."""
    texts = {k: v if isinstance(v, str) else json.dumps(v) for k, v in docs.items()}
    return {"ID": config_id, "Version": {"Index": version},
            "Spec": {"Name": shelf_name(number),
                     "Labels": shelf_labels(STATE_LABEL, texts, closed)}}


def test_a_document_gone_from_its_shelf_is_handed_on_as_gone(monkeypatch: Any) -> None:
    """Another controller removed one document from a shelf: the event's read hands on the
    shelf's others (their version moved with the shelf's) and the one that left."""
    monkeypatch.setattr(swarm_module, "FLUSH_DELAY", 0.0)
    a, b = {"hostname": "a"}, {"hostname": "b"}
    api = Store(shelf("s1", 1, 4, {"host/a": a, "host/b": b}))
    backend = SwarmBackend(api)
    assert {s.key for s in backend.load_all()} == {"host/a", "host/b"}
    api.stored["s1"] = shelf("s1", 1, 6, {"host/b": b})
    heard = Heard()
    backend._stop.set()
    backend._event(event("update", "s1"), heard)
    flushed(backend)
    assert heard.docs == [("host/b", b), ("host/a", None)]
    assert backend._id_of == {"host/b": "s1"}


def test_a_reread_finds_what_left_a_shelf_and_a_shelf_removed() -> None:
    api = Store(shelf("s1", 1, 4, {"host/a": {"hostname": "a"}, "host/b": {"hostname": "b"}},
                      closed=True),
                shelf("s2", 2, 5, {"host/c": {"hostname": "c"}}))
    backend = SwarmBackend(api)
    backend.load_all()
    api.stored["s1"] = shelf("s1", 1, 7, {"host/a": {"hostname": "a"}}, closed=True)
    del api.stored["s2"]  # its events were lost
    heard = Heard()
    backend._resync(heard, moved_only=True)
    assert sorted(heard.docs, key=str) == sorted(
        [("host/a", {"hostname": "a"}), ("host/b", None), ("host/c", None)], key=str)


def test_a_malformed_document_on_a_shelf_hides_only_itself() -> None:
    api = Store(shelf("s1", 1, 4, {"host/a": "{not json", "host/b": {"hostname": "b"}}))
    backend = SwarmBackend(api)
    assert [s.key for s in backend.load_all()] == ["host/b"]
    assert backend._shelves["s1"].docs["host/a"] == "{not json"  # kept, were it rewritten


def test_a_document_moved_to_another_config_is_not_gone_with_its_old_one() -> None:
    """A hostname removed from a closed shelf and made again on the open one: the old
    shelf's late read (or removal) must not take the new document away."""
    api = Store(shelf("s1", 1, 4, {"host/a": {"hostname": "a"}}, closed=True),
                shelf("s2", 2, 6, {"host/a": {"hostname": "a", "again": True}}))
    backend = SwarmBackend(api)
    backend.load_all()
    assert backend._id_of["host/a"] in ("s1", "s2")
    backend._documents([api.stored["s2"]])
    heard = Heard()
    api.stored["s1"] = shelf("s1", 1, 8, {}, closed=True)
    backend._resync(heard, moved_only=True)
    backend._event(event("remove", "s1"), heard)
    assert heard.docs == [] and backend._id_of["host/a"] == "s2"


def test_a_read_older_than_memorys_copy_of_a_shelf_is_ignored() -> None:
    """A listing begun before a write and handled after it (the re-read, a flush's
    answer): taken, it would make memory lose the document written meanwhile, and the
    name could then be added again on another shelf."""
    x = {"hostname": "x"}
    api = Store(shelf("s1", 1, 16, {"host/a": {"hostname": "a"}, "host/x": x}))
    backend = SwarmBackend(api)
    backend.load_all()
    heard = Heard()
    old = shelf("s1", 1, 15, {"host/a": {"hostname": "a"}})
    assert backend._documents([old]) == ([], [])
    api.stored["s1"] = old
    backend._resync(heard, moved_only=True)
    assert heard.docs == [] and backend._id_of["host/x"] == "s1"


def test_a_read_from_before_our_own_write_is_ignored() -> None:
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"}}))
    backend = SwarmBackend(api, shelve=lambda: True)
    backend.load_all()
    backend.update(backend.get("host/a"), {"hostname": "a", "n": 2})  # on version 10
    before = shelf("s1", 1, 10, {})  # a listing answered before our write
    assert backend._documents([before]) == ([], [])
    after = shelf("s1", 1, 11, {"host/a": {"hostname": "a", "n": 2}})
    assert [s.body for s in backend._documents([after])[0]] == [{"hostname": "a", "n": 2}]


def test_a_removed_configs_late_read_is_ignored() -> None:
    api = Store(config("cfg1", "host/pi-1", 3, {"hostname": "pi-1"}))
    backend = SwarmBackend(api)
    backend.load_all()
    heard = Heard()
    backend._event(event("remove", "cfg1"), heard)
    assert heard.docs == [("host/pi-1", None)]
    assert backend._documents([api.stored["cfg1"]]) == ([], [])  # begun before it went


class ShelfDocker(Store):
    """Creates and compare-and-swaps configs by name, as Docker does."""

    def __init__(self, *configs: dict[str, Any]) -> None:
        super().__init__(*configs)
        self.index = 100

    def _named(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.stored.values() if c["Spec"]["Name"] == name), None)

    def configs(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append("read")
        names, ids = filters.get("name"), filters.get("id")  # names: prefixes, as Docker's
        return [copy.deepcopy(c) for i, c in self.stored.items()
                if (names is None or any(c["Spec"]["Name"].startswith(n) for n in names))
                and (ids is None or i in ids)]

    def inspect_config(self, ref: str) -> dict[str, Any]:
        found = self.stored.get(ref) or self._named(ref)
        if found is None:
            raise swarm_module.NotFound(404, "no such config")
        return copy.deepcopy(found)

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        self.calls.append("create")
        if self._named(name):
            raise APIError(409, "config already exists")
        self.index += 1
        config_id = f"id{self.index}"
        self.stored[config_id] = {"ID": config_id, "Version": {"Index": self.index},
                                  "Spec": {"Name": name, "Labels": labels}}
        return {"ID": config_id}

    def update_config(self, ref: str, version: int, spec: dict[str, Any]) -> None:
        self.calls.append("update")
        found = self.stored.get(ref) or self._named(ref)
        if found is None:
            raise swarm_module.NotFound(404, "no such config")
        if found["Version"]["Index"] != version:
            raise APIError(500, "update out of sequence")
        self.index += 1
        found["Version"]["Index"] = self.index
        found["Spec"] = spec


def test_a_shelf_grown_full_by_a_change_is_closed_for_good() -> None:
    big = "x" * 40_000
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"},
                                          "host/b": {"hostname": "b"}}))
    backend = SwarmBackend(api, shelve=lambda: True)
    backend.load_all()
    backend.update(backend.get("host/a"), {"hostname": "a", "big": big})
    backend.update(backend.get("host/b"), {"hostname": "b", "big": big})  # past SHELF_FILL
    assert api.stored["s1"]["Spec"]["Labels"]["swarm-enroll.shelf"] == "closed"
    backend.update(backend.get("host/b"), {"hostname": "b"})  # it shrinks: still closed
    assert api.stored["s1"]["Spec"]["Labels"]["swarm-enroll.shelf"] == "closed"
    backend.create("host/c", {"hostname": "c"})
    assert api._named(shelf_name(2)) is not None and "host/c" in backend._keys_at[
        api._named(shelf_name(2))["ID"]]


def test_shelves_once_in_use_are_used_whatever_the_registry_says() -> None:
    """The registry's word can change back (an entry without it); a name must never get a
    config of its own while shelves are in use, even by a controller that has not yet
    heard of any shelf."""
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"}}))
    backend = SwarmBackend(api, shelve=lambda: False)  # memory: no shelf yet
    backend.create("host/x", {"hostname": "x"})
    assert "host/x" in backend._keys_at["s1"]
    assert not [c for c in api.stored.values() if c["Spec"]["Name"] == config_name("host/x")]
    with pytest.raises(Conflict):
        backend.create("host/a", {"hostname": "a", "again": True})
    fresh = SwarmBackend(ShelfDocker(), shelve=lambda: False)
    fresh.create("host/y", {"hostname": "y"})  # no shelf anywhere: a config of its own
    assert fresh._shelves == {} and fresh.api._named(config_name("host/y")) is not None


def test_a_hostname_made_again_elsewhere_is_not_lost_to_its_old_configs_reads() -> None:
    """Removed from a closed shelf and made again on the open one: the old shelf's read
    (older, or in the same batch) must neither point the name back nor hand it on as
    gone, or the name could be decided a second time."""
    x = {"hostname": "x"}
    s1_before = shelf("s1", 1, 10, {"host/x": x, "host/a": {"hostname": "a"}}, closed=True)
    s1_after = shelf("s1", 1, 12, {"host/a": {"hostname": "a"}}, closed=True)
    s2 = shelf("s2", 2, 13, {"host/x": {"hostname": "x", "again": True}})
    backend = SwarmBackend(Store())
    backend._documents([s2])
    found, gone = backend._documents([s1_before])  # older than what put x on s2
    assert backend._id_of["host/x"] == "s2" and gone == []
    assert [d.key for d in found] == ["host/a"]
    found, gone = backend._documents([s1_after])
    assert gone == [] and backend._id_of["host/x"] == "s2"
    fresh = SwarmBackend(Store())  # one batch holding both, the old shelf's read last
    found, gone = fresh._documents([s2, s1_before])
    assert gone == [] and [d.body for d in found if d.key == "host/x"] == [
        {"hostname": "x", "again": True}]
    found, gone = fresh._documents([s1_after])
    assert gone == [] and fresh._id_of["host/x"] == "s2"


def test_our_write_noted_after_a_newer_read_changes_nothing() -> None:
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"}}))
    backend = SwarmBackend(api, shelve=lambda: True)
    backend.load_all()
    later = shelf("s1", 1, 20, {"host/a": {"hostname": "a"}, "host/k": {"hostname": "k"}})
    backend._documents([later])  # a read after our write (on 10) and a neighbour's
    assert backend._note("s1", {"host/a"}, None, None, written=10) == []
    assert backend._id_of["host/k"] == "s1" and backend._keys_at["s1"] == {"host/a", "host/k"}


def test_a_malformed_shelf_is_passed_over_and_enrollment_goes_on() -> None:
    bad = {"ID": "bad", "Version": {"Index": 11},  # made by hand: a shelf's name only
           "Spec": {"Name": shelf_name(2), "Labels": {STATE_LABEL: "1"}}}
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"}}, closed=True), bad)
    backend = SwarmBackend(api, shelve=lambda: True)
    backend.load_all()
    backend.create("host/x", {"hostname": "x"})
    assert api._named(shelf_name(3)) is not None
    assert "host/x" in backend._keys_at[api._named(shelf_name(3))["ID"]]


def test_a_shelf_numbered_far_up_by_hand_costs_one_listing_not_one_read_each() -> None:
    api = ShelfDocker(shelf("s1", 1, 10, {"host/a": {"hostname": "a"}}, closed=True),
                      shelf("s9", 5000, 11, {"host/b": {"hostname": "b"}}))
    backend = SwarmBackend(api, shelve=lambda: True)
    backend._documents([api.stored["s9"]])  # memory knows only the stray one
    api.calls.clear()
    backend.create("host/x", {"hostname": "x"})
    assert api.calls.count("read") <= 3 and "host/x" in backend._keys_at["s9"]
