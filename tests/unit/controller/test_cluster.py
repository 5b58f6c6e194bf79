"""One controller at a time acts for the cluster (a lease in the shared state), and the
work moves when its holder falls silent; every controller says where it serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import controller.cluster as cluster_module
from controller.cluster import Actor, Job, Lease, Registry
from controller.state import State
from controller.state.sqlite import SQLiteBackend

from ..helpers import FakeClock


@pytest.fixture
def states(tmp_path: Path) -> Iterator[list[State]]:
    made = [State(SQLiteBackend(tmp_path / "shared.db")) for _ in range(3)]
    yield made
    for s in made:
        s.close()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(cluster_module, "time", clock)
    return clock


def sync(states: list[State]) -> None:
    """What config events do between real controllers."""
    for s in states:
        s.refresh(cluster_module.LEASE_KEY)


def test_one_holder_and_a_takeover_when_it_falls_silent(states: list[State],
                                                        clock: FakeClock) -> None:
    leases = [Lease(s, f"ctl-{i}") for i, s in enumerate(states)]
    held = [lease.tick() for lease in leases]
    sync(states)
    held = [lease.tick() for lease in leases]
    assert held == [True, False, False]
    for _ in range(5):  # the holder renews: nobody takes over however long it lasts
        clock.advance(5)
        assert leases[0].tick()
        sync(states)
        assert not leases[1].tick() and not leases[2].tick()
    clock.advance(10)  # ctl-0 dies: its lease stops changing
    sync(states)
    assert not leases[1].tick()  # silent for 10 s only
    clock.advance(6)
    sync(states)
    took = [leases[1].tick(), leases[2].tick()]
    assert took.count(True) == 1
    sync(states)
    assert not leases[0].tick()  # back from the dead: it finds the lease taken


def test_the_actor_starts_and_stops_its_jobs_with_the_lease(states: list[State],
                                                           clock: FakeClock) -> None:
    calls: list[str] = []
    job = Job("work", start=lambda: calls.append("start"), stop=lambda: calls.append("stop"),
              tick=lambda: calls.append("tick"))
    broken = Job("broken", tick=lambda: 1 / 0)
    actor = Actor(Lease(states[0], "ctl-0"), [broken, job])
    actor.step()
    assert actor.acting and calls == ["start", "tick"]  # a failing job stops no other
    other = Lease(states[1], "ctl-1")
    sync(states)
    assert not other.tick()
    clock.advance(20)
    assert other.tick()  # ctl-0 silent for 20 s: taken over
    sync(states)
    actor.step()
    assert not actor.acting and calls == ["start", "tick", "stop"]


def test_the_registry_lists_controllers_heard_from_lately(states: list[State],
                                                          clock: FakeClock) -> None:
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")
    b = Registry(states[1], "ctl-1", "https://10.0.0.2:8443")
    a.heartbeat(force=True)
    b.heartbeat(force=True)
    states[0].refresh("controller/ctl-1")
    assert a.urls() == ["https://10.0.0.1:8443", "https://10.0.0.2:8443"]
    clock.advance(200)  # ctl-1 has not said a word since
    a.heartbeat(force=True)
    assert a.urls() == ["https://10.0.0.1:8443"]
    assert [(r["hostname"], r["heard_s_ago"], r["serving"]) for r in a.view()] == [
        ("ctl-0", 0.0, True), ("ctl-1", 200.0, False)]
    a.leave()
    states[1].refresh("controller/ctl-0")
    assert "controller/ctl-0" not in states[1].docs("controller")


def test_silence_is_measured_on_this_controllers_clock(states: list[State],
                                                      clock: FakeClock) -> None:
    """Another Pi's clock may be far off (no real-time clock, no time server at the edge):
    one an hour behind serves from its next heartbeat on, one ahead falls silent all the
    same, and a first sight guesses from the entry's time, for at most
    FIRST_GUESS_MOST."""
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")

    def beat(name: str, skew: float) -> None:
        states[1].update_doc(f"controller/{name}", lambda _old: {
            "hostname": name, "url": f"https://{name}:8443", "at": clock.now + skew})
        states[0].refresh(f"controller/{name}")

    beat("behind", -3600)
    beat("ahead", +3600)
    beat("dead", -120)  # first seen here two minutes after its last heartbeat
    silent = {k.split("/")[1]: round(v[1]) for k, v in a.look().items()}
    assert silent == {"behind": cluster_module.FIRST_GUESS_MOST, "ahead": 0, "dead": 120}
    assert a.urls() == ["https://10.0.0.1:8443", "https://ahead:8443"]
    clock.advance(30)
    beat("behind", -3600)  # its next heartbeat, still an hour behind
    assert a.urls() == ["https://10.0.0.1:8443", "https://ahead:8443", "https://behind:8443"]
    clock.advance(cluster_module.GONE_AFTER - 5)  # "ahead" has said nothing since
    a.look()  # as `serving` does every few seconds
    clock.advance(5)
    beat("behind", -3600)  # dated after that look, not an hour back
    assert a.urls() == ["https://10.0.0.1:8443", "https://behind:8443"]


def test_a_change_seen_late_is_dated_by_its_time_within_the_looks(
        states: list[State], clock: FakeClock) -> None:
    """A controller that beat once after the last look and then died is not taken for one
    heard from just now, however long until the next look."""
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")
    b = Registry(states[1], "ctl-1", "https://10.0.0.2:8443")
    b.heartbeat(force=True)
    states[0].refresh("controller/ctl-1")
    assert a.urls() == ["https://10.0.0.1:8443", "https://10.0.0.2:8443"]
    clock.advance(30)
    b.heartbeat(force=True)  # its last word
    states[0].refresh("controller/ctl-1")
    clock.advance(470)
    assert [(r["hostname"], r["heard_s_ago"], r["serving"]) for r in a.view()] == [
        ("ctl-1", 470.0, False)]
    assert a.urls() == ["https://10.0.0.1:8443"]


def test_malformed_entries_are_passed_over(states: list[State], clock: FakeClock) -> None:
    """Only managers write them; still, one cannot stop grants or the cluster view."""
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")
    a.heartbeat(force=True)
    for name, body in (("nan", {"hostname": "nan", "url": "https://n:8443", "at": "nan"}),
                       ("inf", {"hostname": 5, "url": "https://i:8443", "at": float("inf")}),
                       ("nourl", {"hostname": "nourl", "url": None, "at": clock.now}),
                       ("list", ["not", "a", "dict"])):
        states[0].update_doc(f"controller/{name}", lambda _old, body=body: body)
    assert a.urls() == ["https://10.0.0.1:8443"]  # an `at` that is no time: long silent
    rows = a.view()
    assert [(r["hostname"], r["heard_s_ago"]) for r in rows] == [
        ("5", cluster_module.FIRST_GUESS_MOST), ("ctl-0", 0.0),
        ("nan", cluster_module.FIRST_GUESS_MOST)]  # no NaN, which JSON cannot carry


def test_the_actor_forgets_controllers_not_heard_of_for_long(states: list[State],
                                                             clock: FakeClock) -> None:
    """A dead or demoted manager cannot remove its own entry (a demoted one may no longer
    write): the acting controller does, once it has not changed for FORGET_AFTER on the
    actor's own clock. One whose clock is far behind, but renewed, stays."""
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")
    Registry(states[2], "ctl-2", "https://10.0.0.3:8443").heartbeat(force=True)  # then dies

    def skewed_beat() -> None:  # ctl-1's clock is an hour behind
        states[1].update_doc("controller/ctl-1", lambda _old: {
            "hostname": "ctl-1", "url": "https://10.0.0.2:8443", "at": clock.now - 3600})

    def tick() -> None:
        for key in ("controller/ctl-1", "controller/ctl-2"):
            states[0].refresh(key)
        a.prune()

    a.heartbeat(force=True)
    skewed_beat()
    tick()
    for _ in range(2):
        clock.advance(cluster_module.FORGET_AFTER / 2 - 1)
        skewed_beat()
        tick()
    assert sorted(states[0].docs("controller")) == ["controller/ctl-0", "controller/ctl-1",
                                                    "controller/ctl-2"]  # not yet
    clock.advance(2)
    skewed_beat()
    tick()
    assert sorted(states[0].docs("controller")) == ["controller/ctl-0", "controller/ctl-1"]


def test_new_hostnames_go_on_shelves_only_once_every_controller_reads_them(
        states: list[State]) -> None:
    a = Registry(states[0], "ctl-0", "https://10.0.0.1:8443")
    assert not a.shelves_read_everywhere()  # not even its own entry written yet
    a.heartbeat(force=True)
    assert a.shelves_read_everywhere()
    # an earlier version's controller: its entry says nothing of shelves
    states[1].update_doc("controller/old-1", lambda _old: {
        "hostname": "old-1", "url": "https://10.0.0.9:8443", "at": 1.0})
    states[0].refresh("controller/old-1")
    assert not a.shelves_read_everywhere()
    Registry(states[1], "old-1", "https://10.0.0.9:8443").heartbeat(force=True)  # upgraded
    states[0].refresh("controller/old-1")
    assert a.shelves_read_everywhere()
