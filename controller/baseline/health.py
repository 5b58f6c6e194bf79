"""Cluster health as the controller reports it: nodes, leader, tasks, Raft fault tolerance."""

from __future__ import annotations

from collections import Counter
from typing import Any

from controller.baseline.desired import OWNER_LABEL, OWNER_VALUE, node_view

MAX_RECOMMENDED_MANAGERS = 7


def fault_tolerance(managers: int, reachable: int | None = None) -> dict[str, Any]:
    """Raft in numbers and in words: quorum, failures tolerated, and what to do about it."""
    reachable = managers if reachable is None else reachable
    quorum = managers // 2 + 1 if managers else 0
    tolerates = (managers - 1) // 2 if managers else 0
    if managers == 0:
        summary = "no managers: this is not a working swarm"
    elif managers == 1:
        summary = ("1 manager: it tolerates zero failures; if it fails, the swarm cannot be "
                   "managed (running tasks keep running, but nothing can be scheduled, "
                   "updated or joined)")
    elif managers == 2:
        summary = ("2 managers: a quorum of 2 needs both, so the swarm tolerates zero "
                   "manager failures; losing either one stops cluster management, which is "
                   "no safer than one manager and twice as likely to happen")
    else:
        summary = (f"{managers} managers: quorum is {quorum}, so the swarm tolerates "
                   f"{tolerates} manager failure{'s' if tolerates != 1 else ''}")
        if managers % 2 == 0:
            summary += (f", no more than {managers - 1} managers would (an even count adds "
                        "no fault tolerance)")
    if managers == 0:
        recommendation = "initialise the swarm on a manager"
    elif managers % 2 == 0:
        recommendation = (f"use an odd number of managers: promote one more (to {managers + 1},"
                          f" which tolerates {managers // 2} failure"
                          f"{'s' if managers // 2 != 1 else ''}) or demote one")
    elif managers == 1:
        recommendation = ("use an odd number of managers above one: 3 managers tolerate 1 "
                          "failure")
    elif managers > MAX_RECOMMENDED_MANAGERS:
        recommendation = (f"more than {MAX_RECOMMENDED_MANAGERS} managers slow Raft down; "
                          "Docker recommends at most 7")
    else:
        recommendation = "an odd number of managers: good"
    unreachable = managers - reachable
    if managers and unreachable > 0:
        if reachable >= quorum:
            left = reachable - quorum
            summary += (f". {unreachable} of {managers} unreachable now: quorum holds, "
                        f"{left} more failure{'s' if left != 1 else ''} can be tolerated")
        else:
            summary += (f". {unreachable} of {managers} unreachable now: QUORUM IS LOST; the "
                        "swarm cannot be managed until enough managers are back")
    return {"managers": managers, "reachable": reachable, "quorum": quorum,
            "fault_tolerance": tolerates, "has_quorum": reachable >= quorum and managers > 0,
            "odd": managers % 2 == 1, "summary": summary, "recommendation": recommendation}


def _group(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "total": len(nodes),
        "by_state": dict(Counter(n["state"] for n in nodes)),
        "by_availability": dict(Counter(n["availability"] for n in nodes)),
        "nodes": nodes,
    }


def cluster_health(nodes_attrs: list[dict[str, Any]], services: list[dict[str, Any]],
                   tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """What GET /v1/cluster answers, from the swarm's nodes, services and tasks."""
    views = sorted((node_view(a) for a in nodes_attrs), key=lambda v: v.hostname.lower())
    rows: dict[str, list[dict[str, Any]]] = {"manager": [], "worker": []}
    leader: dict[str, str] | None = None
    for v in views:
        row = {"hostname": v.hostname, "id": v.id, "state": v.state,
               "availability": v.availability, "arch": v.arch}
        if v.role == "manager":
            row.update(reachability=v.reachability, leader=v.leader, addr=v.addr)
            if v.leader:
                leader = {"hostname": v.hostname, "id": v.id, "addr": v.addr}
        rows["manager" if v.role == "manager" else "worker"].append(row)
    managers = rows["manager"]
    reachable = sum(1 for m in managers if m["reachability"] == "reachable")
    by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_service.setdefault(task.get("ServiceID", ""), []).append(task)
    service_rows = []
    for s in sorted(services, key=lambda s: s["Spec"]["Name"]):
        spec = s["Spec"]
        mine = by_service.get(s["ID"], [])
        mode = spec.get("Mode") or {}
        wanted = [t for t in mine if t.get("DesiredState") == "running"]
        desired = (len(wanted) if "Global" in mode
                   else int((mode.get("Replicated") or {}).get("Replicas") or 0))
        service_rows.append({
            "name": spec["Name"],
            "mode": "global" if "Global" in mode else "replicated",
            "desired": desired,
            "running": sum(1 for t in wanted if (t.get("Status") or {}).get("State")
                           == "running"),
            "baseline": (spec.get("Labels") or {}).get(OWNER_LABEL) == OWNER_VALUE,
        })
    return {
        "managers": _group(managers),
        "workers": _group(rows["worker"]),
        "leader": leader,
        "raft": fault_tolerance(len(managers), reachable),
        "services": service_rows,
    }


def read_cluster(api: Any) -> dict[str, Any]:
    """cluster_health over the local manager's Docker API (controller.dockerapi)."""
    return cluster_health(api.nodes(), api.services(), api.tasks())
