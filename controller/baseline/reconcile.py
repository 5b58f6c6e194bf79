"""The reconciler: makes the swarm's services match the baseline file.

Triggers: after each join (EnrollmentService.membership_changed), on start, on demand
(POST /v1/baseline/apply), and on node changes it notices (Docker's node events on this
manager, and a periodic check of the nodes every `interval` seconds in case an event was
missed). Joins and node events are coalesced: the worker waits until they have been quiet
for `settle` seconds, so that a fleet powering up costs one update, not one per Pi. Every
reconcile reads the file afresh; a file that does not parse changes nothing.

Nodes are counted by their settled role: a Pi whose enrollment says manager but that
Swarm still lists as a worker (it joins as one, then is promoted) counts as a manager.
The same periodic check runs the stuck-task watchdog (watchdog.py).

Safety: only services labelled swarm-enroll.baseline=true are ever updated or removed; a
lock keeps two reconciles of this process apart, and every update carries the service
version Docker gave us, so a reconcile of another controller (or a hand edit) in between
makes Docker refuse ours ("update out of sequence"): we read the service again, compare
again, and retry.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.baseline.desired import (
    HASH_LABEL,
    OWNER_LABEL,
    OWNER_VALUE,
    Desired,
    NodeView,
    build,
    diff,
    last_task_error,
    merge,
    node_view,
    rolled_back_from,
    shape,
)
from controller.baseline.spec import (
    Baseline,
    BaselineError,
    ServiceDef,
    load_baseline,
    parse_baseline,
)
from controller.baseline.watchdog import STUCK_AFTER, find_stuck
from controller.dockerapi import APIError, DockerAPI, NotFound

log = logging.getLogger(__name__)
SERVICE_KEYS = ("Name", "Labels", "TaskTemplate", "Mode", "UpdateConfig", "RollbackConfig",
                "EndpointSpec")

CREATED, UPDATED, UNCHANGED, REMOVED, ERROR = "created", "updated", "unchanged", "removed", "error"
OUT_OF_SEQUENCE = "update out of sequence"
BUSY_STATES = ("updating", "rollback_started")
DEFAULT_INTERVAL = 10.0
# A join or node event is followed by more (the next Pis of a fleet, Ready, promoted by
# the controller): wait until they have been quiet this long, so that one reconcile sees
# the end state. A steady stream is cut off after SETTLE_MAX_ROUNDS such waits.
DEFAULT_SETTLE = 2.0
SETTLE_MAX_ROUNDS = 5
ATTEMPTS = 5

Audit = Callable[[str, str, str], None]  # (actor, action, reason)


class Source(Protocol):
    """Where the baseline's text lives: a file, or the controllers' shared state."""

    def current(self) -> Baseline: ...

    def replace(self, text: str) -> Baseline: ...

    def describe(self) -> str: ...

    def version(self) -> float:
        """Changes when the text does (a file's mtime, a document's version)."""
        ...


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path

    def current(self) -> Baseline:
        return load_baseline(self.path)

    def replace(self, text: str) -> Baseline:
        """Validate new file contents, then (only then) put them in place atomically."""
        baseline = parse_baseline(text, source=str(self.path))
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        return baseline

    def describe(self) -> str:
        return str(self.path)

    def version(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return -1.0
# Hostname (lower case) -> the role its enrollment is taking it to, for Pis on the way.
Settling = Callable[[], dict[str, str]]


@dataclass
class Result:
    service: str
    result: str
    message: str = ""
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    at: float = 0.0
    trigger: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "result": self.result, "message": self.message,
                "changes": self.changes, "warnings": self.warnings, "at": self.at,
                "trigger": self.trigger}


@dataclass
class Report:
    trigger: str
    started: float
    finished: float = 0.0
    results: list[Result] = field(default_factory=list)
    error: str = ""  # the whole reconcile failed (bad file, no swarm): nothing was changed
    error_code: str = ""
    file_error: BaselineError | None = None

    @property
    def ok(self) -> bool:
        return not self.error and all(r.result != ERROR for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "started": self.started, "finished": self.finished,
                "ok": self.ok, "error": self.error, "error_code": self.error_code,
                "results": [r.to_json() for r in self.results]}


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return f"{type(exc).__name__}: {exc}"


def _is_conflict(exc: APIError) -> bool:
    text = f"{exc.explanation} {exc}".lower()
    return exc.status_code == 409 or "already exists" in text or "name conflicts" in text


def _is_out_of_sequence(exc: APIError) -> bool:
    return OUT_OF_SEQUENCE in f"{exc.explanation} {exc}".lower()


def _service_body(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a service spec Docker takes on create and update, as the CLI sends."""
    return {k: spec[k] for k in SERVICE_KEYS if spec.get(k) is not None}


def _owned(service: dict[str, Any]) -> bool:
    return ((service.get("Spec") or {}).get("Labels") or {}).get(OWNER_LABEL) == OWNER_VALUE


def _replicas_text(desired: Desired) -> str:
    if desired.replicas is None:
        return "global"
    return f"{desired.replicas} replica{'s' if desired.replicas != 1 else ''}"


class Reconciler:
    """One per controller process, over the local manager's Docker API."""

    def __init__(self, api: DockerAPI, source: Path | Source, interval: float = DEFAULT_INTERVAL,
                 audit: Audit | None = None, settle: float = DEFAULT_SETTLE,
                 settling: Settling | None = None, stuck_after: float = STUCK_AFTER) -> None:
        self.api = api
        self.source: Source = FileSource(source) if isinstance(source, Path) else source
        self.interval = interval
        self.settle = settle
        self.audit = audit
        self.settling = settling
        self.stuck_after = stuck_after
        # Services with a stuck task now: what the watchdog saw, and what it did once.
        self.stuck: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # one reconcile at a time in this process
        # (reason, only if the nodes changed, wait for the burst to settle)
        self._pending: list[tuple[str, bool, bool]] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events: Any = None
        self._shape: tuple[Any, ...] | None = None
        self._text_version: float | None = None  # the baseline text the last one used
        self.last_report: Report | None = None
        self.last_results: dict[str, Result] = {}

    # ---- reconcile ---------------------------------------------------------------------

    def load(self) -> Baseline:
        """The baseline; a bad edit of this manager's file is an error here too (as a bad
        file always was): nothing is applied until it is fixed."""
        baseline = self.source.current()
        pending = getattr(self.source, "local_error", None)
        if isinstance(pending, BaselineError):
            raise pending
        return baseline

    def replace_file(self, text: str) -> Baseline:
        """Validate new file contents, then (only then) make them the baseline."""
        return self.source.replace(text)

    def reconcile(self, trigger: str, force: bool = False, actor: str = "controller",
                  baseline: Baseline | None = None) -> Report:
        """Make the swarm match the file now; blocks while another reconcile runs."""
        with self._lock:
            report = Report(trigger, time.time())
            try:
                self._text_version = self.source.version()
                if baseline is None:
                    baseline = self.load()
                nodes = self.nodes()
                services = {s["Spec"]["Name"]: s for s in self.api.services()}
            except BaselineError as exc:
                report.error, report.error_code = str(exc), "baseline_invalid"
                report.file_error = exc
            except Exception as exc:  # Docker unreachable, not a manager, ...
                report.error, report.error_code = (f"cannot read the swarm: {_explain(exc)}",
                                                   "swarm_unavailable")
            if report.error:
                log.error("baseline reconcile (%s) changed nothing: %s", trigger, report.error)
            else:
                self._shape = shape(nodes)
                for svc in baseline.services:
                    try:
                        report.results.append(self._one(svc, nodes, force))
                    except Exception as exc:  # Docker went away mid-way, say
                        report.results.append(Result(svc.name, ERROR, _explain(exc)))
                declared = {n.lower() for n in baseline.names()}
                for name, service in sorted(services.items()):
                    if _owned(service) and name.lower() not in declared:
                        report.results.append(self._remove(service))
            report.finished = time.time()
            for r in report.results:
                r.at, r.trigger = report.finished, trigger
                self.last_results[r.service] = r
                if r.result != UNCHANGED:
                    level = logging.ERROR if r.result == ERROR else logging.INFO
                    log.log(level, "baseline %s: %s %s (%s)", r.service, r.result, r.message,
                            trigger)
                if r.result in (CREATED, UPDATED, REMOVED) and self.audit:
                    try:
                        self.audit(actor, f"baseline.{r.result}", f"{r.service}: {r.message}")
                    except Exception:
                        log.exception("could not write the audit row for %s", r.service)
            self.last_report = report
            return report

    def _one(self, svc: ServiceDef, nodes: list[NodeView], force: bool) -> Result:
        desired = build(svc, nodes)
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(0.05 * attempt)
            try:
                current = self.api.inspect_service(svc.name)
            except NotFound:
                current = None
            except APIError as exc:
                return Result(svc.name, ERROR, f"cannot inspect it: {_explain(exc)}")
            if current is None:
                try:
                    self._create(desired.spec)
                except APIError as exc:
                    if _is_conflict(exc):
                        continue  # created meanwhile (another controller): look again
                    return Result(svc.name, ERROR, f"Docker refused to create it: "
                                  f"{_explain(exc)}", warnings=desired.warnings)
                return Result(svc.name, CREATED, f"{desired.image}, {_replicas_text(desired)}",
                              warnings=desired.warnings)
            if not _owned(current):
                return Result(svc.name, ERROR, f"a service named {svc.name!r} exists but is "
                              f"not managed by swarm-enroll (no label {OWNER_LABEL}="
                              f"{OWNER_VALUE}); it is left untouched: remove it or rename the "
                              "baseline service")
            spec = current["Spec"]
            changes = diff(spec, desired.spec)
            if not changes:
                return Result(svc.name, UNCHANGED, f"{desired.image}, "
                              f"{_replicas_text(desired)}", warnings=desired.warnings)
            if not force:
                try:
                    tasks = self.api.tasks(filters={"service": current["ID"]})
                except APIError as exc:
                    return Result(svc.name, ERROR, f"cannot list its tasks: {_explain(exc)}")
                reason = rolled_back_from(desired.spec, current, tasks)
                if reason:
                    return Result(svc.name, ERROR, reason, changes, desired.warnings)
            try:
                self._update(current, merge(spec, desired.spec))
            except APIError as exc:
                if _is_out_of_sequence(exc):
                    log.info("baseline %s changed while we updated it; reading it again",
                             svc.name)
                    continue
                return Result(svc.name, ERROR, f"Docker refused the update: {_explain(exc)}",
                              changes, desired.warnings)
            return Result(svc.name, UPDATED, "; ".join(changes), changes, desired.warnings)
        return Result(svc.name, ERROR, f"the service kept changing while we updated it "
                      f"({ATTEMPTS} attempts); apply again")

    def _create(self, spec: dict[str, Any]) -> None:
        self.api.create_service(_service_body(spec))

    def _update(self, current: dict[str, Any], spec: dict[str, Any]) -> None:
        self.api.update_service(current["ID"], current["Version"]["Index"],
                                _service_body(spec))

    def _remove(self, service: dict[str, Any]) -> Result:
        name = service["Spec"]["Name"]
        try:
            self.api.remove_service(service["ID"])
        except NotFound:
            return Result(name, UNCHANGED, "already gone")
        except APIError as exc:
            return Result(name, ERROR, f"Docker refused to remove it: {_explain(exc)}")
        return Result(name, REMOVED, "no longer in the baseline file")

    # ---- triggers ----------------------------------------------------------------------

    def nodes(self) -> list[NodeView]:
        """The swarm's nodes as placement sees them, each with its settled role."""
        views = [node_view(n) for n in self.api.nodes()]
        settling = self.settling() if self.settling else {}
        return [dataclasses.replace(v, role=settling[v.hostname.lower()])
                if settling.get(v.hostname.lower(), v.role) != v.role else v for v in views]

    def request(self, reason: str, only_if_nodes_changed: bool = False,
                settle: bool = False) -> None:
        """Ask the background worker for a reconcile (coalesced; returns at once). With
        `settle`, it waits for the burst this request belongs to to end."""
        with self._pending_lock:
            self._pending.append((reason, only_if_nodes_changed, settle))
        self._wake.set()

    def on_membership_changed(self, node: Any) -> None:
        """EnrollmentService listener: a Pi joined (or left) the swarm."""
        self.request(f"{getattr(node, 'hostname', 'a node')} {getattr(node, 'state', 'changed')}",
                     settle=True)

    def start(self) -> None:
        """The background worker (reconciles on request, checks the nodes every interval)
        and the node-event watcher; the first reconcile runs at once."""
        if self._threads:
            return
        self._stop.clear()
        self.request("controller start")
        for target, name in ((self._worker, "baseline-reconciler"),
                             (self._watch_nodes, "baseline-node-events")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        events = self._events
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _take_pending(self) -> list[tuple[str, bool, bool]]:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        return pending

    def run_pending(self) -> Report | None:
        """One step of the worker: reconcile for what was asked, or when the nodes changed."""
        pending = self._take_pending()
        forced = [reason for reason, only_if, _ in pending if not only_if]
        if forced:
            return self.reconcile(", ".join(dict.fromkeys(forced)))
        try:
            now = shape(self.nodes())
            edited = self.source.version() != self._text_version
        except Exception as exc:
            log.warning("baseline: cannot list the nodes: %s", _explain(exc))
            return None
        if edited:  # a file edit on any manager, or an apply on another controller
            return self.reconcile("the baseline changed")
        if now == self._shape:
            return None
        reasons = [reason for reason, _, _ in pending] or ["periodic check"]
        return self.reconcile("nodes changed (" + ", ".join(dict.fromkeys(reasons)) + ")")

    def _settle(self) -> None:
        """Wait while the requests waiting to settle keep coming (bounded)."""
        for _ in range(SETTLE_MAX_ROUNDS):
            with self._pending_lock:
                waiting = len(self._pending)
                if not waiting or not all(s for _, _, s in self._pending):
                    return
            if self._stop.wait(self.settle):
                return
            with self._pending_lock:
                if len(self._pending) == waiting:
                    return  # quiet for `settle` seconds: the burst is over

    def _worker(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._settle()
            if self._stop.is_set():
                break
            try:
                self.run_pending()
                self.watch_stuck()
            except Exception:
                log.exception("baseline reconcile failed")

    # ---- the stuck-task watchdog -------------------------------------------------------

    def watch_stuck(self) -> None:
        """Give each baseline service with a stuck task one forced update per episode (an
        episode ends when the service has no stuck task any more)."""
        with self._lock:
            services = self.api.services()
            watch = {s["Spec"]["Name"] for s in services if _owned(s)}
            if not watch:
                self.stuck.clear()
                return
            found = find_stuck(services, watch, self.api.tasks(), self.nodes(), time.time(),
                               self.stuck_after)
            for name in set(self.stuck) - {f.service for f in found}:
                log.info("baseline %s: no task is stuck any more", name)
                del self.stuck[name]
            for stuck in found:
                if self.stuck.get(stuck.service, {}).get("acted"):
                    self.stuck[stuck.service].update(stuck.to_json())
                    continue  # once per episode: a forced update that did not help is news
                why = (f"task {stuck.task} has been pending for {stuck.pending_for:.0f}s "
                       f"although {', '.join(stuck.room_on)} could run it")
                acted, action = self._force_update(stuck.service)
                self.stuck[stuck.service] = {**stuck.to_json(), "action": action,
                                             "acted": acted, "at": time.time()}
                log.warning("baseline %s: %s; %s", stuck.service, why, action)
                if self.audit:
                    try:
                        self.audit("controller", "baseline.unstuck",
                                   f"{stuck.service}: {why}; {action}")
                    except Exception:
                        log.exception("could not write the audit row for %s", stuck.service)

    def _force_update(self, name: str) -> tuple[bool, str]:
        """`docker service update --force`: the scheduler places every task afresh."""
        for _ in range(ATTEMPTS):
            try:
                current = self.api.inspect_service(name)
                spec = copy.deepcopy(current["Spec"])
                template = spec.setdefault("TaskTemplate", {})
                template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
                self._update(current, spec)
            except APIError as exc:
                if _is_out_of_sequence(exc):
                    continue
                return False, f"the forced update failed (tried again soon): {_explain(exc)}"
            return True, "forced an update of the service so that Swarm places its tasks afresh"
        return False, "the forced update kept meeting other changes (tried again soon)"

    def _watch_nodes(self) -> None:
        """Docker's node events (join, leave, up, down, promote, drain) on this manager."""
        while not self._stop.is_set():
            try:
                self._events = self.api.events(filters={"type": ["node"]})
                for event in self._events:
                    if self._stop.is_set():
                        break
                    actor = event.get("Actor") or {}
                    name = (actor.get("Attributes") or {}).get("name") or \
                        str(actor.get("ID", "?"))[:12]
                    self.request(f"node {name} {event.get('Action', '')}",
                                 only_if_nodes_changed=True, settle=True)
            except Exception as exc:
                if not self._stop.is_set():
                    log.debug("node events stream ended: %s", _explain(exc))
            self._stop.wait(5.0)

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per service: desired vs running tasks, nodes, drift, last result and error."""
        try:
            baseline: Baseline | None = self.load()
            file_error = ""
        except BaselineError as exc:
            baseline, file_error = None, str(exc)
        nodes = self.nodes()
        hostnames = {n.id: n.hostname for n in nodes}
        services = {s["Spec"]["Name"]: s for s in self.api.services()}
        tasks: dict[str, list[dict[str, Any]]] = {}
        for task in self.api.tasks():
            tasks.setdefault(task.get("ServiceID", ""), []).append(task)
        declared = {s.name: s for s in (baseline.services if baseline else ())}
        names = list(declared) + sorted(n for n, s in services.items()
                                        if _owned(s) and n not in declared)
        rows = [self._status_row(name, declared.get(name), services.get(name), nodes,
                                 hostnames, tasks) for name in names]
        return {
            "file": self.source.describe(),
            "file_error": file_error,
            "converged": not file_error and all(r["converged"] for r in rows),
            "last_reconcile": self.last_report.to_json() if self.last_report else None,
            "services": rows,
        }

    def _status_row(self, name: str, svc: ServiceDef | None, service: dict[str, Any] | None,
                    nodes: list[NodeView], hostnames: dict[str, str],
                    tasks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        desired = build(svc, nodes) if svc else None
        mine = tasks.get(service["ID"], []) if service else []
        task_error, failed_at = last_task_error(mine)
        spec = (service or {}).get("Spec") or {}
        running = [t for t in mine if t.get("DesiredState") == "running"
                   and (t.get("Status") or {}).get("State") == "running"]
        if "Global" in (spec.get("Mode") or {}):
            # One per eligible node, whether or not Swarm has made its task yet: counting
            # the tasks would call a service that has none yet converged.
            desired_tasks = len(desired.eligible) if desired else sum(
                1 for t in mine if t.get("DesiredState") == "running")
        else:
            desired_tasks = int(((spec.get("Mode") or {}).get("Replicated") or {})
                                .get("Replicas") or 0)
        update = (service or {}).get("UpdateStatus") or {}
        owned = bool(service) and _owned(service or {})
        changes = diff(spec, desired.spec) if (service and desired) else []
        in_sync = bool(service) and owned and desired is not None and not changes
        last = self.last_results.get(name)
        error = ""
        if service and not owned:
            error = (f"a service named {name!r} exists but is not managed by swarm-enroll; "
                     "it is left untouched")
        elif service and desired and changes:
            error = rolled_back_from(desired.spec, service, mine)
        if not error and last and last.result == ERROR:
            error = last.message
        return {
            "name": name,
            "declared": svc is not None,
            "exists": service is not None,
            "owned": owned,
            "image": ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get(
                "Image", ""),
            "desired_image": desired.image if desired else "",
            "mode": svc.mode if svc else ("global" if "Global" in (spec.get("Mode") or {})
                                          else "replicated"),
            "replicas": (svc.replicas if svc and svc.mode == "replicated" else None),
            "desired_tasks": desired_tasks,
            "running_tasks": len(running),
            "nodes": sorted({hostnames.get(t.get("NodeID", ""), t.get("NodeID", ""))
                             for t in running}),
            "ports": [{"published": p.get("PublishedPort"), "target": p.get("TargetPort"),
                       "protocol": p.get("Protocol", "tcp"),
                       "mode": p.get("PublishMode", "ingress")}
                      for p in ((spec.get("EndpointSpec") or {}).get("Ports") or [])],
            "in_sync": in_sync,
            "changes": changes if service else ["missing: apply creates it"] if svc else [],
            "converged": in_sync and len(running) == desired_tasks
            and update.get("State") not in BUSY_STATES,
            "update": {"state": update.get("State", ""), "message": update.get("Message", "")},
            "task_error": task_error,
            "task_error_s_ago": round(time.time() - failed_at, 1) if failed_at else None,
            "hash": (spec.get("Labels") or {}).get(HASH_LABEL, ""),
            "desired_hash": desired.hash if desired else "",
            "warnings": desired.warnings if desired else [],
            "last_result": last.to_json() if last else None,
            "stuck": self.stuck.get(name),
            "error": error,
        }
