"""Finding and ending the lab's processes from /proc, so teardown works without our memory.

A crash of the lab's own process loses every Popen object; what survives is /proc: the
network namespace a process lives in, its cgroup, its command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator


def pids() -> Iterator[int]:
    """Every pid currently in /proc."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie still answers kill(0))."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def netns_of(pid: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the process's network namespace."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def cgroups_of(pid: int) -> list[str]:
    """The cgroup paths of a process (one per hierarchy)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            return [line.rstrip("\n").split(":", 2)[2] for line in fh if line.count(":") >= 2]
    except OSError:
        return []


def find(pred: Callable[[int], bool]) -> list[int]:
    """Pids (other than ours) for which `pred` holds."""
    me = os.getpid()
    found = []
    for pid in pids():
        if pid == me:
            continue
        with contextlib.suppress(Exception):
            if pred(pid):
                found.append(pid)
    return found


def in_netns(ns_ids: Iterable[tuple[int, int]]) -> list[int]:
    """Processes living in any of the given network namespaces."""
    wanted = set(ns_ids)
    if not wanted:
        return []
    return find(lambda pid: netns_of(pid) in wanted)


def in_cgroup(component: str, prefix: bool = False) -> list[int]:
    """Processes with a cgroup path component equal to (or, with `prefix`, starting with)
    `component`: how containers under a daemon's --cgroup-parent are found."""
    def match(part: str) -> bool:
        return part.startswith(component) if prefix else part == component

    return find(lambda pid: any(match(p) for c in cgroups_of(pid) for p in c.split("/")))


def with_arg_containing(fragment: str) -> list[int]:
    """Processes with an argument containing `fragment` (e.g. a lab runtime path)."""
    return find(lambda pid: any(fragment in a for a in cmdline(pid)))


def reap(pid: int) -> None:
    """Collect a dead child so it does not linger as a zombie; not our child is fine."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pids_: Iterable[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL whatever is left; gone is fine."""
    left = _signal_and_wait(pids_, signal.SIGTERM, timeout, 0.1)
    if left:
        kill(left)


def kill(pids_: Iterable[int], timeout: float = 5.0) -> None:
    """SIGKILL and wait (bounded) until they are gone."""
    _signal_and_wait(pids_, signal.SIGKILL, timeout, 0.05)


def kill_all(scan: Callable[[], Iterable[int]], rounds: int = 5) -> list[int]:
    """SIGKILL what `scan` finds, and scan again until it finds nothing alive (at most
    `rounds` times): a process forked between a scan and the kill (a container's shim
    starting) is caught by the next one. Returns the ones still alive."""
    victims: set[int] = set()
    for _ in range(rounds):
        found = {p for p in scan() if alive(p)}
        if not found:
            break
        kill(found)
        victims |= found
    return [p for p in victims if alive(p)]


def _signal_and_wait(pids_: Iterable[int], sig: int, timeout: float,
                     interval: float) -> list[int]:
    """Signal each (never PID 1 or ourselves), reap, wait; the ones still alive."""
    targets = [p for p in set(pids_) if p > 1 and p != os.getpid()]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while True:
        for pid in targets:
            reap(pid)
        left = [p for p in targets if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(interval)
