"""The quorum keeper's decisions, step by step, over a small in-memory swarm and a real
shared state (a SQLite file). The same journeys on real dockerds: tests/e2e/test_keeper.py.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.keeper import (
    DEMOTED,
    LABEL,
    OFF,
    PROMOTED,
    STATUS_KEY,
    QuorumKeeper,
    describe,
    inherited,
)
from controller.rules import QuorumSettings
from controller.state import APPROVED, JOINED, Record, State
from controller.state.sqlite import SQLiteBackend
from controller.swarm import LocalNode, SwarmError, quorum_lost

SETTINGS = QuorumSettings(managers=3, promote="pi-*", down_after=120)


def stamp(seconds_ago: float) -> str:
    """A node's UpdatedAt as Docker writes it (nanoseconds, Z)."""
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def node(hostname: str, role: str = "worker", state: str = "ready", down: float = 0.0,
         promoted: bool = False, availability: str = "active") -> dict[str, Any]:
    """A swarm node as the Docker API lists it; a Down manager is unreachable."""
    attrs: dict[str, Any] = {
        "ID": f"id-{hostname}", "Description": {"Hostname": hostname},
        "Status": {"State": state}, "UpdatedAt": stamp(down),
        "Spec": {"Role": role, "Availability": availability,
                 "Labels": {LABEL: PROMOTED} if promoted else {}}}
    if role == "manager":
        attrs["ManagerStatus"] = {"Reachability": "reachable" if state == "ready"
                                  else "unreachable"}
    return attrs


class Swarm:
    """What the keeper uses of controller.swarm.Swarm, over a dict of nodes. A node
    promoted here is a reachable Raft member at once; a demoted one stops being one."""

    def __init__(self, *nodes: dict[str, Any], me: str = "mgr-1") -> None:
        self.attrs = {n["ID"]: n for n in nodes}
        self.me = me
        self.updates: list[tuple[str, str]] = []  # (hostname, new role)
        self.fail: SwarmError | None = None

    def local(self) -> LocalNode:
        return LocalNode(f"id-{self.me}", self.me, "cluster", "10.0.0.1")

    def nodes(self) -> list[dict[str, Any]]:
        if self.fail is not None:
            raise self.fail
        return copy.deepcopy(list(self.attrs.values()))

    def update_node(self, node_id: str,
                    change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        attrs = self.attrs[node_id]
        spec = change(copy.deepcopy(attrs))
        if spec is None:
            return False
        attrs["Spec"] = spec
        if spec["Role"] == "manager":
            attrs["ManagerStatus"] = {"Reachability": "reachable"}
        else:
            attrs.pop("ManagerStatus", None)
        self.updates.append((attrs["Description"]["Hostname"], spec["Role"]))
        return True

    def role(self, hostname: str) -> str:
        return self.attrs[f"id-{hostname}"]["Spec"]["Role"]

    def labels(self, hostname: str) -> dict[str, str]:
        return self.attrs[f"id-{hostname}"]["Spec"]["Labels"]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    made = State(SQLiteBackend(tmp_path / "shared.db"))
    yield made
    made.close()


def enroll(state: State, hostname: str, node_id: str | None = None, role: str = "worker",
           record_state: str = JOINED, approve: str = "token") -> None:
    """A record of the Pi, joined as swarm node `node_id` (default: its node in Swarm)."""
    record = Record(f"enr_{hostname}", hostname, f"hw-{hostname}", f"tp-{hostname}", "{}",
                    record_state, role, approve=approve,
                    swarm_node_id=node_id if node_id is not None else f"id-{hostname}")
    state.update_host(hostname, lambda doc: doc.add(record, "test", "node.request"))


def keeper(swarm: Swarm, state: State,
           settings: QuorumSettings | None = SETTINGS) -> QuorumKeeper:
    return QuorumKeeper(swarm, state, lambda: settings)  # type: ignore[arg-type]


def status(state: State) -> dict[str, Any]:
    return state.doc(STATUS_KEY) or {}


def actions(state: State) -> list[tuple[str, str]]:
    return [(e.action, e.hostname) for e in reversed(state.events()) if
            e.action.startswith("quorum.")]


def test_two_managers_of_three_promote_one_enrolled_candidate(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager"), node("pi-2"),
                  node("pi-1"))
    for name in ("pi-1", "pi-2"):
        enroll(state, name)
    keep = keeper(swarm, state)
    keep.step()
    assert swarm.updates == [("pi-1", "manager")]  # one change, the first by hostname
    assert swarm.labels("pi-1") == {LABEL: PROMOTED}
    (event,) = state.events(action="quorum.promote")
    assert event.hostname == "pi-1" and event.actor == "keeper:mgr-1"
    assert "2 managers of 3 wanted" in event.reason
    assert [e.action for e in state.events(hostname="pi-1")] == ["quorum.promote", "node.request"]
    last = status(state)["last"]
    assert (last["action"], last["hostname"], last["by"]) == ("promote", "pi-1", "mgr-1")
    keep.step()
    assert swarm.updates == [("pi-1", "manager")]  # three healthy now: nothing more
    assert status(state)["waiting"] == "nothing to do: 3 healthy managers, 3 wanted"
    assert status(state)["last"] == last


def test_never_an_unenrolled_or_unfit_node(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager"),
                  node("pi-0"),  # no record: it joined without enrolling
                  node("pi-1"),  # a record of another swarm node of that name
                  node("pi-2", availability="drain"), node("pi-3", state="down"),
                  node("other-1"),  # enrolled, but not a hostname it may promote
                  node("pi-4"))  # let in by an `auto` rule: anyone on the LAN could be it
    enroll(state, "pi-1", node_id="id-gone")
    for name in ("pi-2", "pi-3", "other-1"):
        enroll(state, name)
    enroll(state, "pi-4", approve="auto")
    keeper(swarm, state).step()
    assert swarm.updates == [] and actions(state) == []
    waiting = status(state)["waiting"]
    assert waiting.startswith("no candidate: 2 managers of 3 wanted") and "'pi-*'" in waiting


def test_without_quorum_nothing_is_done(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager", "down", down=600),
                  node("mgr-3", "manager", "down", down=600), node("pi-1"))
    enroll(state, "pi-1")
    keep = keeper(swarm, state)
    keep.step()
    assert swarm.updates == [] and actions(state) == []
    assert status(state)["waiting"].startswith("no quorum: 1 of 3 managers reachable")
    swarm.fail = quorum_lost(3)  # Docker itself refuses to list nodes
    keep.step()
    assert swarm.updates == [] and status(state)["waiting"].startswith("no quorum")


def test_a_manager_briefly_down_is_not_replaced(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager", "down", down=30),
                  node("pi-1", "manager", promoted=True), node("pi-2"))
    enroll(state, "pi-2")
    keeper(swarm, state).step()
    assert swarm.updates == []
    assert status(state)["waiting"].startswith("mgr-2 to be Ready and reachable")


def test_a_lost_manager_is_demoted_and_a_candidate_promoted_one_step_each(
        state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager", "down", down=200),
                  node("pi-1", "manager", promoted=True), node("pi-2"), node("pi-3"))
    for name in ("pi-2", "pi-3"):
        enroll(state, name)
    keep = keeper(swarm, state)
    keep.step()
    # the dead member first: 2 of 2 live (no worse than 2 of 3 with one dead), where
    # promoting first would need 3 of 4 until the dead one is gone
    assert swarm.updates == [("mgr-2", "worker")]
    assert swarm.labels("mgr-2") == {LABEL: DEMOTED}  # its replacement is a manager again
    keep.step()
    assert swarm.updates == [("mgr-2", "worker"), ("pi-2", "manager")]
    keep.step()
    assert len(swarm.updates) == 2
    assert actions(state) == [("quorum.demote", "mgr-2"), ("quorum.promote", "pi-2")]
    (demote,) = state.events(action="quorum.demote")
    assert "mgr-2 has been Down for 200 s (lost after 120 s)" in demote.reason
    assert "pi-2 is promoted next" in demote.reason


def test_a_lost_manager_without_a_replacement_stays_a_member(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager", "down", down=200),
                  node("mgr-3", "manager"))
    keeper(swarm, state).step()
    assert swarm.updates == []
    waiting = status(state)["waiting"]
    assert waiting.startswith("no candidate: 2 managers of 3 wanted")
    assert "lost mgr-2 stays a member in case it comes back" in waiting


def test_a_lost_manager_is_demoted_when_enough_are_healthy(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("pi-4", "manager", "down", down=200,
                                                 promoted=True),
                  node("mgr-2", "manager"), node("pi-1", "manager", promoted=True))
    keeper(swarm, state).step()
    assert swarm.updates == [("pi-4", "worker")]
    assert swarm.labels("pi-4") == {}  # the keeper's own: no manager to come back as


def test_an_extra_healthy_manager_is_one_the_keeper_promoted(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager"),
                  node("pi-1", "manager", promoted=True), node("pi-2", "manager",
                                                                promoted=True),
                  node("mgr-0", "manager"), me="pi-2")
    keep = keeper(swarm, state)
    keep.step()
    # five healthy, three wanted: never a rule's manager, not this controller's own node
    assert swarm.updates == [("pi-1", "worker")] and swarm.labels("pi-1") == {}
    (event,) = state.events(action="quorum.demote")
    assert "5 healthy managers, 3 wanted: pi-1, promoted by the keeper" in event.reason
    keep.step()  # four: only one of the keeper's left, and it is this controller's node
    assert swarm.updates == [("pi-1", "worker"), ("pi-2", "worker")]
    keep.step()
    assert len(swarm.updates) == 2  # mgr-0, mgr-1, mgr-2: made by rules, never demoted


def test_the_last_promoted_by_name_goes_first(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager"),
                  node("pi-1", "manager", promoted=True), node("pi-2", "manager",
                                                                promoted=True))
    keeper(swarm, state).step()
    assert swarm.updates == [("pi-2", "worker")]


def test_more_managers_by_rule_than_wanted_makes_the_count_odd(state: State) -> None:
    swarm = Swarm(*(node(f"mgr-{i}", "manager") for i in range(1, 5)), node("pi-1"))
    enroll(state, "pi-1")
    keep = keeper(swarm, state)
    keep.step()
    assert swarm.updates == [("pi-1", "manager")]  # 4 tolerate no more than 3: make it 5
    keep.step()
    assert len(swarm.updates) == 1  # and keep them: none of the four is the keeper's


def test_a_pi_approved_as_manager_counts_while_it_joins(state: State,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import controller.keeper as keeper_module

    from ..helpers import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(keeper_module, "time", clock)
    swarm = Swarm(node("mgr-1", "manager"), node("pi-1", "manager", promoted=True),
                  node("pi-2"))
    enroll(state, "pi-2")
    enroll(state, "mgr-2", node_id="", role="manager", record_state=APPROVED)
    keep = keeper(swarm, state)
    keep.step()
    assert swarm.updates == []
    assert status(state)["waiting"] == "mgr-2 (approved as manager) to join"
    clock.advance(121)  # its grant was never used: it counts no more
    keep.step()
    assert swarm.updates == [("pi-2", "manager")]


def test_one_change_per_step_and_an_audit_event_for_each(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager", "down", down=300),
                  node("mgr-3", "manager", "down", down=300), node("mgr-4", "manager"),
                  node("mgr-5", "manager"), node("pi-1"), node("pi-2"), node("pi-3"))
    for name in ("pi-1", "pi-2", "pi-3"):
        enroll(state, name)
    keep = keeper(swarm, state, QuorumSettings(5, "pi-*", 120))
    counts = []
    for _ in range(6):
        keep.step()
        counts.append(len(swarm.updates))
    assert counts == [1, 2, 3, 4, 4, 4]
    assert swarm.updates == [("mgr-2", "worker"), ("mgr-3", "worker"), ("pi-1", "manager"),
                             ("pi-2", "manager")]
    assert [a for a, _ in actions(state)] == ["quorum.demote", "quorum.demote",
                                              "quorum.promote", "quorum.promote"]


def test_a_node_that_changed_meanwhile_is_left_alone(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("mgr-2", "manager"), node("pi-1"))
    enroll(state, "pi-1")
    real = swarm.update_node

    def drained_meanwhile(node_id: str, change: Any) -> bool:
        swarm.attrs[node_id]["Spec"]["Availability"] = "drain"
        return real(node_id, change)

    swarm.update_node = drained_meanwhile  # type: ignore[method-assign]
    keeper(swarm, state).step()
    assert swarm.role("pi-1") == "worker" and actions(state) == []
    assert status(state)["waiting"] == "pi-1 changed meanwhile; deciding again"


def test_off_without_settings(state: State) -> None:
    swarm = Swarm(node("mgr-1", "manager"), node("pi-1"))
    enroll(state, "pi-1")
    keep = keeper(swarm, state, None)
    keep.step()
    assert swarm.updates == [] and status(state)["enabled"] is False
    version = state.doc_version(STATUS_KEY)
    keep.step()
    assert state.doc_version(STATUS_KEY) == version  # the status is written on changes only


def test_a_replacement_takes_the_role_of_a_manager_the_keeper_demoted() -> None:
    demoted = node("mgr-2", state="down")
    demoted["Spec"]["Labels"] = {LABEL: DEMOTED, "zone": "a"}
    assert inherited(demoted) == ("manager", {"zone": "a"})
    keepers = node("pi-1", "manager", "down", promoted=True)
    assert inherited(keepers) == ("manager", {LABEL: PROMOTED})
    assert inherited(node("pi-2", state="down")) == ("worker", {})


def test_what_any_controller_shows(state: State) -> None:
    assert describe(None, None, True)["waiting"] == "off from its next step"
    swarm = Swarm(node("mgr-1", "manager"), node("pi-1"))
    keeper(swarm, state, None).step()
    off = describe(None, status(state), True)
    assert (off["enabled"], off["waiting"]) == (False, OFF)
    assert describe(SETTINGS, status(state), True)["waiting"] == "its next step"
    keeper(swarm, state).step()
    on = describe(SETTINGS, status(state), True)
    assert (on["enabled"], on["managers"], on["promote"], on["down_after_seconds"]) == (
        True, 3, "pi-*", 120)
    assert on["waiting"].startswith("no candidate") and on["since"] is not None
    assert describe(SETTINGS, status(state), False)["waiting"].startswith("no quorum")
