"""The lab ends a Pi's processes by scanning /proc; one forked between the scan and the
kill (a container's shim starting) must be caught by a scan after it (deploy/lab/procs.py;
a kill_pi in CI left two such processes)."""

from __future__ import annotations

import subprocess

from deploy.lab import procs


def test_a_process_started_after_a_scan_is_killed_by_the_next() -> None:
    first = subprocess.Popen(["sleep", "60"])
    started: list[subprocess.Popen[bytes]] = []

    def scan() -> set[int]:
        found = {first.pid, *(p.pid for p in started)}
        if not started:  # forks right after this scan, as a shim's start does
            started.append(subprocess.Popen(["sleep", "60"]))
        return found

    try:
        assert procs.kill_all(scan) == []
        assert not procs.alive(first.pid) and not procs.alive(started[0].pid)
    finally:
        for proc in (first, *started):
            proc.kill()
            proc.wait()


def test_nothing_found_kills_nothing() -> None:
    assert procs.kill_all(set) == []
