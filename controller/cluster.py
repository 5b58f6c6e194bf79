"""The controllers of one swarm: which ones serve, and the one that acts for the cluster.

Every manager runs a controller, and they share one state. Work done for the whole
cluster (reconciling the baseline, the quorum keeper, sealing the CA key again after a
token rotation) must be done by exactly one of them, and move within seconds when its
manager dies: a lease in the shared state. The holder renews it every `renew` seconds
(a compare-and-swap of its beat); another controller takes it over when it has not seen
the lease change for `ttl` seconds on its own clock (no two Pis' clocks are compared).
Without a Raft quorum nobody can renew or take it: nobody acts, which is right, since
nothing could be written.

Each controller also writes where it serves (`controller/<hostname>`), so that grants can
tell agents every controller to fail over to.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.wire.errors import WireError
from controller.state import State, StoreUnavailable, Unchanged

log = logging.getLogger(__name__)

LEASE_KEY = "lease/actor"
RENEW = 5.0
TTL = 15.0
HEARTBEAT = 30.0
GONE_AFTER = 90.0  # a controller not heard of for this long is left out of grants
FORGET_AFTER = 600.0  # and its entry removed after this long (a dead or demoted manager's)
FIRST_GUESS_MOST = 300.0  # the most silence guessed from another Pi's clock (see Registry)


@dataclass
class Job:
    """Cluster-wide work: started when this controller starts acting, stopped when it
    stops; `tick` (optional) runs at every renewal while acting."""

    name: str
    start: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None
    tick: Callable[[], None] = lambda: None


class Lease:
    def __init__(self, state: State, holder: str, ttl: float = TTL) -> None:
        self.state = state
        self.holder = holder
        self.ttl = ttl
        self._seen: tuple[tuple[Any, ...], float] = ((), time.monotonic())  # what, since

    def held(self) -> bool:
        return (self.state.doc(LEASE_KEY) or {}).get("holder") == self.holder

    @staticmethod
    def _mark(body: dict[str, Any] | None) -> tuple[Any, ...]:
        body = body or {}
        return body.get("holder"), body.get("term"), body.get("beat")

    def tick(self) -> bool:
        """Renew the lease, or take it over if its holder has gone quiet; True if ours."""
        now = time.monotonic()
        mark = self._mark(self.state.doc(LEASE_KEY))
        if mark != self._seen[0]:
            self._seen = (mark, now)
        quiet_since = self._seen[1]

        def change(body: dict[str, Any] | None) -> dict[str, Any]:
            if body and body.get("holder") == self.holder:
                return {**body, "beat": int(body.get("beat", 0)) + 1}
            # only what we saw stay still for `ttl` may be taken over, not a newer write
            if body and (self._mark(body) != mark or now - quiet_since <= self.ttl):
                raise Unchanged(None)
            if body:
                log.warning("taking over cluster-wide work from %s (silent for %.0fs)",
                            body.get("holder"), now - quiet_since)
            return {"holder": self.holder, "term": int((body or {}).get("term", 0)) + 1,
                    "beat": 0}

        try:
            self.state.update_doc(LEASE_KEY, change)
        except (WireError, StoreUnavailable) as exc:  # no quorum, or lost a race
            log.debug("lease not renewed: %s", exc)
        return self.held()


class Actor:
    """Runs `jobs` while this controller holds the lease."""

    def __init__(self, lease: Lease, jobs: list[Job], interval: float = RENEW) -> None:
        self.lease = lease
        self.jobs = jobs
        self.interval = interval
        self.acting = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster-actor", daemon=True)
        self._thread.start()

    def step(self) -> None:
        holds = self.lease.tick()
        if holds and not self.acting:
            log.info("this controller now acts for the cluster (%s)",
                     ", ".join(j.name for j in self.jobs))
            self.acting = True
            for job in self.jobs:
                self._call(job.name, job.start)
        elif not holds and self.acting:
            log.info("another controller acts for the cluster now")
            self._halt()
        if self.acting:
            for job in self.jobs:
                self._call(job.name, job.tick)

    def _halt(self) -> None:
        self.acting = False
        for job in self.jobs:
            self._call(job.name, job.stop)

    @staticmethod
    def _call(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # one job's failure must not stop the others, or the lease
            log.exception("cluster-wide job %s failed", name)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.acting:
            self._halt()


class Registry:
    """Where each controller serves, for grants to tell agents (heartbeats every 30 s).

    Who was heard from lately is measured on this controller's own clock: how long each
    entry has not changed (a Pi has no real-time clock, and a LAN at the edge may have no
    time server, so another Pi's `at` may be far off). The entries are looked at every few
    seconds (`serving` calls `look`), and a change is dated between the look that saw it
    and the one before, where its `at` puts it: another Pi's clock moves it by a few
    seconds at most. At the first look, an entry counts as silent since its `at`, for at
    most FIRST_GUESS_MOST: a dead controller's is left out at once, one whose clock is far
    behind only until its next heartbeat, and none is forgotten before FORGET_AFTER -
    FIRST_GUESS_MOST of silence seen here."""

    def __init__(self, state: State, hostname: str, url: str) -> None:
        self.state = state
        self.hostname = hostname
        self.url = url
        self._last = 0.0
        self._quiet: dict[str, tuple[Any, float]] = {}  # key -> (its `at`, silent since)
        self._looked: float | None = None  # when the entries were last looked at
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        return f"controller/{self.hostname.lower()}"

    def heartbeat(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last < HEARTBEAT:
            return
        try:
            self.state.update_doc(self.key, lambda _old: {
                "hostname": self.hostname, "url": self.url, "at": time.time(),
                "shelves": True})
            self._last = time.monotonic()
        except (WireError, StoreUnavailable) as exc:
            log.debug("controller heartbeat not written: %s", exc)

    def shelves_read_everywhere(self) -> bool:
        """Whether every controller in the registry reads shelves (says so in its entry):
        an earlier version's would not see the hostnames on them, and could take one
        again. So new hostnames go on shelves only once every manager runs this version
        (the entry of one that died goes with the pruning)."""
        entries = self.state.docs("controller")
        return self.key in entries and all(
            isinstance(b, dict) and b.get("shelves") is True for b in entries.values())

    def look(self) -> dict[str, tuple[dict[str, Any], float]]:
        """Every controller's entry (well-formed ones: managers write them), and for how
        many seconds it has not changed (this controller's own: 0)."""
        with self._lock:  # one look at a time: an older read must not undo a newer one
            mono, now = time.monotonic(), time.time()
            docs = {k: b for k, b in self.state.docs("controller").items()
                    if isinstance(b, dict) and isinstance(b.get("url"), str)}
            self._quiet = {k: v for k, v in self._quiet.items() if k in docs}
            for key, body in docs.items():
                at = body.get("at")
                if key in self._quiet and self._quiet[key][0] == at:
                    continue
                ago = max(now - _seconds(at), 0.0)  # by its clock
                if self._looked is None:
                    since = mono - min(ago, FIRST_GUESS_MOST)
                else:  # changed since the last look: when, its `at` says within that
                    since = min(max(mono - ago, self._looked), mono)
                self._quiet[key] = (at, since)
            self._looked = mono
            return {key: (body, 0.0 if key == self.key else mono - self._quiet[key][1])
                    for key, body in docs.items()}

    def urls(self) -> list[str]:
        """This controller first, then the others heard from lately."""
        others = sorted(body["url"] for key, (body, silent) in self.look().items()
                        if key != self.key and silent < GONE_AFTER)
        return [self.url, *others]

    def view(self) -> list[dict[str, Any]]:
        """The controllers as `enrollctl cluster` lists them: those heard from lately
        serve; the others are listed until they are forgotten."""
        return sorted(({"hostname": str(body.get("hostname", "")), "url": body["url"],
                        "heard_s_ago": round(silent, 1), "serving": silent < GONE_AFTER}
                       for body, silent in self.look().values()),
                      key=lambda r: r["hostname"].lower())

    def leave(self) -> None:
        with contextlib.suppress(WireError, StoreUnavailable):
            self.state.update_doc(self.key, lambda _old: None)

    def prune(self) -> None:
        """Remove the entries of controllers silent for FORGET_AFTER: a manager that died
        or was demoted could not remove its own (a demoted one may no longer write).
        Cluster-wide work, for the acting controller; one renewed meanwhile stays."""
        for key, (body, silent) in self.look().items():
            if key == self.key or silent < FORGET_AFTER:
                continue
            at = body.get("at")

            def forget(current: dict[str, Any] | None, at: Any = at,
                       silent: float = silent) -> None:
                if current is None or current.get("at") != at:
                    raise Unchanged(None)  # renewed meanwhile, or gone
                log.info("forgetting controller %s: not heard of for %.0f s",
                         current.get("hostname", "?"), silent)

            with contextlib.suppress(WireError, StoreUnavailable):
                self.state.update_doc(key, forget)


def _seconds(at: Any) -> float:
    """An entry's `at` (another Pi's wall clock), or 0 if it is no time."""
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return 0.0
    return float(at)
