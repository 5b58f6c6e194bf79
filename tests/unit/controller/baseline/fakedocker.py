"""An in-memory stand-in for the parts of controller.dockerapi.DockerAPI the reconciler uses.

It stores service specs the way Docker answers them: zero values left out (protobuf 3)
and defaults filled in, so that the reconciler's normalisation is tested against
Docker's shape rather than its own. Versions go up on each write, and an update with
an old version fails with Docker's own "update out of sequence".
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.dockerapi import APIError, NotFound

_ids = itertools.count(1)


def _drop_zero(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_zero(v) for k, v in value.items()
                if v not in (0, 0.0, False, "", None) or isinstance(v, dict)}
    if isinstance(value, list):
        return [_drop_zero(v) for v in value]
    return value


def as_docker_returns(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as Docker stores and returns it."""
    spec = _drop_zero(copy.deepcopy(spec))
    tt = spec.setdefault("TaskTemplate", {})
    tt.setdefault("ContainerSpec", {}).setdefault("Isolation", "default")
    tt.setdefault("Resources", {"Limits": {}, "Reservations": {}})
    tt.setdefault("Runtime", "container")
    tt.setdefault("ForceUpdate", 0)
    tt.setdefault("Placement", {}).setdefault("Platforms", [])
    endpoint = spec.setdefault("EndpointSpec", {})
    endpoint.setdefault("Mode", "vip")
    for policy in ("UpdateConfig", "RollbackConfig"):
        if spec.get(policy):
            spec[policy].setdefault("FailureAction", "pause")
            spec[policy].setdefault("Order", "stop-first")
            spec[policy].setdefault("MaxFailureRatio", 0)
    # Docker keeps the caller's order for lists; reverse some to make sure order is not
    # what makes specs compare equal
    cs = tt["ContainerSpec"]
    if cs.get("Env"):
        cs["Env"] = list(reversed(cs["Env"]))
    if tt["Placement"].get("Constraints"):
        tt["Placement"]["Constraints"] = [c.replace("==", " == ") for c in
                                          reversed(tt["Placement"]["Constraints"])]
    return spec


def out_of_sequence() -> APIError:
    return APIError(500, "rpc error: code = Unknown desc = update out of sequence")


def node(hostname: str, role: str = "worker", state: str = "ready",
         availability: str = "active", arch: str = "x86_64",
         labels: dict[str, str] | None = None, leader: bool = False,
         reachability: str = "reachable") -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "ID": f"id-{hostname.lower()}",
        "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}},
        "Description": {"Hostname": hostname,
                        "Platform": {"Architecture": arch, "OS": "linux"},
                        "Engine": {"EngineVersion": "20.10.24", "Labels": {}}},
        "Status": {"State": state, "Addr": f"10.0.0.{next(_ids) % 250}"},
    }
    if role == "manager":
        attrs["ManagerStatus"] = {"Leader": leader, "Reachability": reachability,
                                  "Addr": f"{attrs['Status']['Addr']}:2377"}
    return attrs


class FakeDockerAPI:
    def __init__(self, nodes: list[dict[str, Any]] | None = None) -> None:
        self.node_list = nodes if nodes is not None else [
            node("mgr-1", "manager", leader=True), node("pi-1"), node("pi-2")]
        self.services_by_id: dict[str, dict[str, Any]] = {}
        self.task_list: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.fail_updates = 0  # the next n updates fail with "update out of sequence"
        self.before_update: Callable[[str], None] | None = None
        self.before_create: Callable[[str], None] | None = None
        self.fail_with: APIError | None = None  # for every write
        self.write_delay = 0.0
        self._busy = 0
        self.max_busy = 0
        self._lock = threading.Lock()

    # -- reads ------------------------------------------------------------------------

    def nodes(self, filters: Any = None) -> list[dict[str, Any]]:
        return copy.deepcopy(self.node_list)

    def services(self, filters: Any = None) -> list[dict[str, Any]]:
        return [copy.deepcopy(s) for s in self.services_by_id.values()]

    def _find(self, ref: str) -> dict[str, Any]:
        for s in self.services_by_id.values():
            if ref in (s["ID"], s["Spec"]["Name"]):
                return s
        raise NotFound(404, f"service {ref} not found")

    def inspect_service(self, ref: str) -> dict[str, Any]:
        return copy.deepcopy(self._find(ref))

    def tasks(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        tasks = self.task_list
        if filters and "service" in filters:
            wanted = self._find(filters["service"])["ID"]
            tasks = [t for t in tasks if t["ServiceID"] == wanted]
        return copy.deepcopy(tasks)

    def events(self, filters: Any = None) -> Any:
        return iter(())

    # -- writes -----------------------------------------------------------------------

    def _enter(self, what: str, name: str) -> None:
        with self._lock:
            self._busy += 1
            self.max_busy = max(self.max_busy, self._busy)
            self.calls.append((what, name))
        if self.write_delay:
            time.sleep(self.write_delay)

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1

    def create_service(self, spec: dict[str, Any]) -> dict[str, str]:
        name = spec["Name"]
        if self.before_create:
            hook, self.before_create = self.before_create, None
            hook(name)
        self._enter("create", name)
        try:
            if self.fail_with:
                raise self.fail_with
            if any(s["Spec"]["Name"] == name for s in self.services_by_id.values()):
                raise APIError(409, "rpc error: code = AlreadyExists desc = name conflicts "
                               f"with an existing object: service {name} already exists")
            spec = {"Labels": {}, "Mode": {"Replicated": {"Replicas": 1}}, **spec}
            return {"ID": self.add_service(spec)}
        finally:
            self._leave()

    def add_service(self, spec: dict[str, Any], update_status: dict[str, Any] | None = None,
                    raw: bool = False) -> str:
        """A service as if made by anyone (a test's hand-made service, say)."""
        sid = f"svc{next(_ids)}"
        self.services_by_id[sid] = {
            "ID": sid, "Version": {"Index": next(_ids)},
            "Spec": copy.deepcopy(spec) if raw else as_docker_returns(spec),
            **({"UpdateStatus": update_status} if update_status else {}),
        }
        return sid

    def update_service(self, service: str, version: int, spec: dict[str, Any]) -> None:
        if self.before_update:
            hook, self.before_update = self.before_update, None
            hook(service)
        self._enter("update", service)
        try:
            if self.fail_with:
                raise self.fail_with
            current = self._find(service)
            if self.fail_updates:
                self.fail_updates -= 1
                raise out_of_sequence()
            if version != current["Version"]["Index"]:
                raise out_of_sequence()
            current["Spec"] = as_docker_returns(spec)
            current["Version"]["Index"] = next(_ids)
        finally:
            self._leave()

    def remove_service(self, service: str) -> bool:
        self._enter("remove", service)
        try:
            del self.services_by_id[self._find(service)["ID"]]
            return True
        finally:
            self._leave()

    # -- helpers for tests ------------------------------------------------------------

    def service(self, name: str) -> dict[str, Any]:
        return self._find(name)

    def run_tasks(self, name: str, hostnames: list[str], state: str = "running",
                  spec: dict[str, Any] | None = None, err: str = "") -> None:
        svc = self._find(name)
        ids = {n["Description"]["Hostname"]: n["ID"] for n in self.node_list}
        for host in hostnames:
            self.task_list.append({
                "ID": f"task{next(_ids)}", "ServiceID": svc["ID"], "NodeID": ids[host],
                "DesiredState": "running" if state == "running" else "shutdown",
                "Status": {"State": state, "Err": err},
                "Spec": copy.deepcopy(spec or svc["Spec"]["TaskTemplate"]),
                "UpdatedAt": f"2026-01-01T00:00:{next(_ids) % 60:02d}Z",
            })
