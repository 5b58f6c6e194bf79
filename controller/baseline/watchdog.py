"""Stuck tasks: a baseline task left pending although a node has room for it.

Swarm's scheduler looks at a pending task again when something changes, but not always:
a replica count that went up and down while tasks were being placed on host-mode ports
with one replica per node has left a task `pending` for good beside an idle, eligible
worker. Such a task is drift that Swarm will not fix by itself; the reconciler gives
the service one forced update (`docker service update --force`), which has the scheduler
place every task afresh.

Pure logic over Docker's JSON, so that it is tested without a swarm: `find_stuck` says
which services have a task pending for longer than `after` seconds while a node it may
run on is Ready, Active, satisfies its constraints, is under its max replicas per node
and has the task's host ports free.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.baseline.desired import NodeView, matches
from controller.baseline.spec import parse_constraint
from controller.dockerapi import docker_time

STUCK_AFTER = 30.0


@dataclass(frozen=True)
class Stuck:
    """A service with a task that waits in vain, and the nodes that could take it."""

    service: str
    task: str
    pending_for: float
    room_on: list[str] = field(default_factory=list)  # hostnames

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "pending_for": round(self.pending_for, 1),
                "room_on": self.room_on}


def _host_ports(spec: dict[str, Any]) -> set[tuple[int, str]]:
    ports = ((spec.get("EndpointSpec") or {}).get("Ports")) or []
    return {(int(p.get("PublishedPort") or 0), p.get("Protocol") or "tcp") for p in ports
            if p.get("PublishMode") == "host" and p.get("PublishedPort")}


def _allowed(constraints: list[str], node: NodeView) -> bool:
    for text in constraints:
        try:
            constraint = parse_constraint(text)
        except ValueError:
            return False  # a constraint we cannot read: claim no room rather than guess
        if not matches(constraint, node):
            return False
    return True


def _active(task: dict[str, Any]) -> bool:
    return task.get("DesiredState") == "running"


class _Room:
    """What each node has taken: tasks per service, and host ports. A task counts once it
    is assigned and meant to run, not only once it runs."""

    def __init__(self, services: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
        self.ports_of = {s["ID"]: _host_ports(s.get("Spec") or {}) for s in services}
        self.load: Counter[tuple[str, str]] = Counter()  # (service id, node id) -> tasks
        self.ports_used: dict[str, Counter[tuple[int, str]]] = {}  # node id -> host ports
        for task in tasks:
            node, service = task.get("NodeID") or "", task.get("ServiceID", "")
            if node and _active(task):
                self.load[(service, node)] += 1
                self.ports_used.setdefault(node, Counter()).update(
                    self.ports_of.get(service, ()))

    def fits(self, service: dict[str, Any], node: NodeView, own: str) -> bool:
        """Could a task of `service` run on `node`? `own`: the node the task is made for
        already (global services), whose room it must not take from itself."""
        placement = (((service.get("Spec") or {}).get("TaskTemplate") or {})
                     .get("Placement")) or {}
        max_per_node = int(placement.get("MaxReplicas") or 0)
        mine = 1 if node.id == own else 0
        used = self.ports_used.get(node.id, Counter())
        return (node.schedulable and _allowed(list(placement.get("Constraints") or []), node)
                and (not max_per_node
                     or self.load[(service["ID"], node.id)] - mine < max_per_node)
                and all(used[p] - mine <= 0 for p in self.ports_of[service["ID"]]))


def find_stuck(services: list[dict[str, Any]], watch: set[str], tasks: list[dict[str, Any]],
               nodes: list[NodeView], now: float, after: float = STUCK_AFTER) -> list[Stuck]:
    """Services named in `watch` with a task pending for more than `after` seconds while
    a node has room for it.

    `services` and `tasks` are all of the swarm's: another service's host port can be
    what takes a node's room.
    """
    room = _Room(services, tasks)
    by_id = {n.id: n for n in nodes}
    found = []
    for service in services:
        name = (service.get("Spec") or {}).get("Name", "")
        if name not in watch:
            continue
        for task in tasks:
            status = task.get("Status") or {}
            if (task.get("ServiceID") != service["ID"] or not _active(task)
                    or status.get("State") != "pending"):
                continue
            since = docker_time(status.get("Timestamp", "")) or docker_time(
                task.get("CreatedAt", ""))
            if since is None or now - since <= after:
                continue
            own = task.get("NodeID") or ""  # global tasks are made for one node
            candidates = [by_id[own]] if own in by_id else [] if own else nodes
            fits = sorted(n.hostname for n in candidates if room.fits(service, n, own))
            if fits:
                found.append(Stuck(name, task.get("ID", ""), now - since, fits))
                break  # one task is enough to act on the service
    return found
