"""The quorum keeper: an odd number of healthy managers, kept by the cluster itself.

Opt-in (`[quorum]` in the rules). Run by the one controller that acts for the cluster,
every few seconds; each step makes at most one change and none without a Raft quorum:

- a manager Down for longer than `down_after` is *lost*. It is demoted (Docker allows
  that for an unreachable manager while quorum holds) once a replacement can be promoted
  or enough healthy managers are left, so that Raft counts only live members: removing a
  dead member never lowers the failures the swarm tolerates, while adding the
  replacement first would, for as long as the dead one stays a member (3 of 4 needed
  instead of 2 of 3). Without a replacement it stays a member, in case it comes back;
- fewer managers than wanted (lost ones not counted, Pis approved as managers and on
  their way counted), or an even count: one enrolled, Ready, active worker whose hostname
  matches `promote` is promoted, the first by hostname, and labelled as the keeper's;
- more healthy managers than wanted (a dead one came back or was replaced): one manager
  the keeper promoted is demoted, never one that a rule (or an admin) made a manager, and
  the one this controller runs on only if there is no other.

A lost manager that no rule of the keeper's made is labelled `demoted` when it is
demoted, so that its replacement is a manager again (see `inherited`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.wire.errors import WireError
from controller.rules import QuorumSettings
from controller.state import APPROVED, JOINED, State, StoreUnavailable
from controller.swarm import Swarm, SwarmError, down_for

log = logging.getLogger(__name__)

LABEL = "swarm-enroll.keeper"
PROMOTED = "promoted"  # a manager the keeper made: the one it may demote again
DEMOTED = "demoted"  # a lost manager it demoted: its replacement is a manager again
STATUS_KEY = "keeper/status"
OFF = "off: the rules have no [quorum] table"


@dataclass(frozen=True)
class Node:
    """What the keeper needs of a swarm node."""

    id: str
    hostname: str
    role: str
    state: str
    availability: str
    member: bool  # a Raft member (Docker reports its ManagerStatus)
    reachable: bool
    promoted: bool  # promoted by the keeper
    down_for: float

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> Node:
        spec = attrs.get("Spec") or {}
        status = attrs.get("ManagerStatus") or {}
        state = (attrs.get("Status") or {}).get("State", "")
        return cls(attrs.get("ID", ""), (attrs.get("Description") or {}).get("Hostname", ""),
                   spec.get("Role", "worker"), state, spec.get("Availability", "active"),
                   bool(status), status.get("Reachability") == "reachable",
                   (spec.get("Labels") or {}).get(LABEL) == PROMOTED,
                   down_for(attrs) if state == "down" else 0.0)

    @property
    def healthy(self) -> bool:
        return self.state == "ready" and self.reachable

    def lost(self, after: float) -> bool:
        return self.state == "down" and not self.reachable and self.down_for > after


@dataclass(frozen=True)
class Decision:
    """Promote or demote `node`, or (action "") wait; `reason` says why, in words."""

    action: str
    reason: str
    node: Node | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(nodes: list[Node]) -> str:
    return ", ".join(n.hostname for n in nodes)


def decide(settings: QuorumSettings, nodes: list[dict[str, Any]],
           enrolled: Callable[[Node], bool], self_id: str,
           arriving: Sequence[str] = ()) -> Decision:
    """One step's decision over the swarm's nodes. `enrolled(node)`: the node has a joined
    enrollment record; `arriving`: hostnames approved as managers, not joined yet."""
    view = [Node.of(a) for a in nodes]
    members = [n for n in view if n.member]
    reachable = sum(n.reachable for n in members)
    if reachable <= len(members) // 2:
        return Decision("", f"no quorum: {reachable} of {_plural(len(members), 'manager')} "
                        "reachable; nothing can be changed safely until a majority is back")
    managers = [n for n in view if n.role == "manager"]
    lost = sorted((n for n in managers if n.lost(settings.down_after)),
                  key=lambda n: n.hostname.lower())
    present = [n for n in managers if n not in lost]
    healthy = [n for n in present if n.healthy]
    target = max(settings.managers, sum(not n.promoted for n in present))
    target += 1 - target % 2  # more managers by rule than wanted: the next odd count
    names = {n.hostname.lower() for n in present}
    coming = sorted(h for h in arriving if h.lower() not in names)
    short = len(present) + len(coming) < target
    candidate = _candidate(settings, view, enrolled) if short or lost else None
    if lost and (len(healthy) >= target or candidate):
        node = lost[0]
        then = f"; {candidate.hostname} is promoted next" if short and candidate else ""
        return Decision("demote", f"{node.hostname} has been Down for {node.down_for:.0f} s "
                        f"(lost after {settings.down_after:.0f} s): demoted so that Raft "
                        f"counts only live managers{then}", node)
    if short:
        count = f"{_plural(len(present), 'manager')} of {target} wanted"
        if coming:
            count += f" and {', '.join(coming)} approved as manager, not joined yet"
        if candidate is None:
            kept = (f"; lost {_names(lost)} stays a member in case it comes back"
                    if lost else "")
            return Decision("", f"no candidate: {count}, and no enrolled, Ready, active "
                            f"worker matches {settings.promote!r}{kept}")
        return Decision("promote", count, candidate)
    if len(healthy) > target:
        ours = sorted((n for n in present if n.promoted), key=lambda n: n.hostname.lower(),
                      reverse=True)  # the last promoted by name goes first...
        ours.sort(key=lambda n: (n.id == self_id, n.healthy))  # ...after the unwell, never
        return Decision("demote", f"{_plural(len(healthy), 'healthy manager')}, {target} "
                        f"wanted: {ours[0].hostname}, promoted by the keeper, is one too many",
                        ours[0])  # this controller's own node while there is another
    if coming:
        return Decision("", f"{', '.join(coming)} (approved as manager) to join")
    unwell = [n for n in present if not n.healthy]
    if unwell:
        return Decision("", f"{_names(unwell)} to be Ready and reachable (a manager Down for "
                        f"more than {settings.down_after:.0f} s counts as lost)")
    return Decision("", f"nothing to do: {_plural(len(healthy), 'healthy manager')}, "
                    f"{target} wanted")


def _candidate(settings: QuorumSettings, view: list[Node],
               enrolled: Callable[[Node], bool]) -> Node | None:
    """The first (by hostname) enrolled, Ready, active worker the keeper may promote."""
    fit = sorted((n for n in view if n.role == "worker" and not n.member
                  and n.state == "ready" and n.availability == "active"
                  and settings.may_promote(n.hostname)), key=lambda n: n.hostname.lower())
    return next((n for n in fit if enrolled(n)), None)


def inherited(attrs: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The role and labels a replacement takes over from its hostname's stale node: a
    manager the keeper demoted because it was lost is a manager again, and that mark is
    not carried."""
    spec = attrs.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    role = "manager" if spec.get("Role") == "manager" else "worker"
    if labels.get(LABEL) == DEMOTED:
        role = "manager"
        del labels[LABEL]
    return role, labels


class QuorumKeeper:
    def __init__(self, swarm: Swarm, state: State,
                 settings: Callable[[], QuorumSettings | None]) -> None:
        self.swarm = swarm
        self.state = state
        self.settings = settings
        self._arriving: dict[str, float] = {}  # record id -> first seen (monotonic)

    def step(self) -> None:
        settings = self.settings()
        if settings is None:
            self._report({"enabled": False, "waiting": OFF})
            return
        try:
            local = self.swarm.local()
            decision = decide(settings, self.swarm.nodes(), self._enrolled, local.node_id,
                              self._arriving_managers(settings))
        except SwarmError as exc:
            self._wait(settings, _no_quorum(exc))
            return
        if not decision.action or decision.node is None:
            self._wait(settings, decision.reason)
            return
        node = decision.node
        try:
            done = self.swarm.update_node(node.id, self._change(decision))
        except SwarmError as exc:
            self._wait(settings, f"could not {decision.action} {node.hostname}: "
                       f"{_no_quorum(exc)}")
            return
        if not done:
            self._wait(settings, f"{node.hostname} changed meanwhile; deciding again")
            return
        log.warning("quorum keeper: %sd %s: %s", decision.action, node.hostname,
                    decision.reason)
        action = f"quorum.{decision.action}"
        try:
            self.state.audit(f"keeper:{local.hostname}", action, decision.reason,
                             {"swarm_node_id": node.id, "managers": settings.managers},
                             hostname=node.hostname)
        except (WireError, StoreUnavailable) as exc:
            log.error("quorum keeper: %s %s not audited: %s", action, node.hostname, exc)
        self._report({**self._base(settings), "waiting": "the change to settle",
                      "last": {"action": decision.action, "hostname": node.hostname,
                               "reason": decision.reason, "at": time.time(),
                               "by": local.hostname}})

    @staticmethod
    def _change(decision: Decision) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        """The node spec change, written only if the node still is what was decided on."""
        node = decision.node
        assert node is not None

        def change(attrs: dict[str, Any]) -> dict[str, Any] | None:
            now = Node.of(attrs)
            spec = dict(attrs["Spec"])
            labels = dict(spec.get("Labels") or {})
            if decision.action == "promote":
                if now.role != "worker" or now.state != "ready" or \
                        now.availability != "active":
                    return None
                labels[LABEL] = PROMOTED
                return {**spec, "Role": "manager", "Labels": labels}
            if now.role != "manager" or now.healthy != node.healthy:
                return None
            labels.pop(LABEL, None)
            if not node.healthy and not node.promoted:  # lost (extras are the keeper's)
                labels[LABEL] = DEMOTED
            return {**spec, "Role": "worker", "Labels": labels}
        return change

    def _enrolled(self, node: Node) -> bool:
        """Joined through swarm-enroll, let in by an admin or a token: never by an `auto`
        rule, which lets in whoever takes the name (a manager holds the CA key)."""
        return any(r.state == JOINED and r.swarm_node_id == node.id and r.approve != "auto"
                   for r in self.state.host(node.hostname).records)

    def _arriving_managers(self, settings: QuorumSettings) -> list[str]:
        """Pis approved as managers that have not joined yet: each counted for at most
        `down_after` seconds from when this keeper first saw it (a grant may never be
        used)."""
        now = time.monotonic()
        approved = {r.id: r.hostname for r in self.state.in_state(APPROVED)
                    if r.role == "manager"}
        self._arriving = {i: self._arriving.get(i, now) for i in approved}
        return [approved[i] for i, seen in self._arriving.items()
                if now - seen < settings.down_after]

    @staticmethod
    def _base(settings: QuorumSettings) -> dict[str, Any]:
        return {"enabled": True, "managers": settings.managers}

    def _wait(self, settings: QuorumSettings, why: str) -> None:
        self._report({**self._base(settings), "waiting": why})

    def _report(self, status: dict[str, Any]) -> None:
        """The status document, written only when what it says changes."""
        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            old = old or {}
            if all(old.get(k) == v for k, v in status.items()):
                return old  # the same: nothing is written
            return {**old, **status, "since": time.time()}
        try:
            self.state.update_doc(STATUS_KEY, change)
        except (WireError, StoreUnavailable) as exc:  # no quorum: nothing can be written
            log.debug("quorum keeper status not written: %s", exc)


def _no_quorum(exc: SwarmError) -> str:
    if exc.code == "quorum_lost":
        return "no quorum: nothing can be changed safely until a majority of managers is back"
    return exc.message


def describe(settings: QuorumSettings | None, status: dict[str, Any] | None,
             has_quorum: bool) -> dict[str, Any]:
    """The keeper as GET /v1/cluster shows it: its settings, last action and what it waits
    for (from the status any controller can read)."""
    status = status or {}
    seen = status.get("enabled") == (settings is not None)  # it has stepped since a change
    last = status.get("last")
    if settings is None:
        return {"enabled": False, "managers": None, "promote": None,
                "down_after_seconds": None, "last": last,
                "waiting": OFF if seen else "off from its next step", "since": None}
    waiting = status.get("waiting") if seen else "its next step"
    if not has_quorum:
        waiting = "no quorum: nothing can be changed safely until a majority of managers is back"
    return {"enabled": True, "managers": settings.managers, "promote": settings.promote,
            "down_after_seconds": settings.down_after, "last": last, "waiting": waiting,
            "since": status.get("since") if seen else None}
