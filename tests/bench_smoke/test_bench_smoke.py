"""Smoke run of every benchmark at tiny N, so that `make bench` never rots.

Benchmarks are not tests: nothing here looks at a duration, a rate or a size. It checks
only that each benchmark ran to the end in its own lab (prefix `sebsmk-`, subnet
198.18.2.0/24, its own state dir: never the default lab nor the full benchmark's) and
that every simulated agent got a valid grant.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.avahi import MARKER
from deploy.lab.netns import list_netns

pytestmark = pytest.mark.lab

STATE_DIR = "/var/lib/swarm-enroll-bench-smoke"
PREFIX = "sebsmk-"
REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> Any:
    """tests.bench.run.main, whether pytest put the repository on sys.path or not."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("tests.bench.run").main(argv)


def _host_avahi() -> set[str]:
    """What the host's own avahi would announce, and its run dir's files (not the markers
    of lab avahis that bind over it: the test lab's run beside this one)."""
    return {str(p) for d in (Path("/etc/avahi/services"), Path("/run/avahi-daemon"))
            if d.is_dir() for p in d.iterdir() if not p.name.startswith(MARKER)}


def test_every_benchmark_runs_at_tiny_n(tmp_path: Path) -> None:
    host_avahi = _host_avahi()
    assert main(["--smoke", "--state-dir", STATE_DIR, "--prefix", PREFIX,
                 "--subnet", "198.18.2.0/24", "--out", str(tmp_path)]) == 0
    assert _host_avahi() == host_avahi  # the check-in's avahi was the bench Pi's own
    res = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("Measured ")

    assert len(res["join"]["raw"]["pairs"]) == 1 and len(res["join"]["raw"]["manual"]) == 1
    assert res["join"]["ratio"]["n"] == 1
    assert res["join"]["agent"]["start_to_found_s"]["n"] == 1  # the log line was found

    for n in ("5", "12"):
        storm = res["storm"][n]
        assert storm["not_granted"]["max"] == 0 and storm["error_count"]["max"] == 0
        assert storm["grants_bad"] == 0
        assert all(r["grants_verified"] == int(n) for r in storm["runs"])
        assert all(r["steal_cores"] >= 0 for r in storm["runs"])  # the hypervisor's share
        # the storm Pi's controller announced through its avahi-daemon, as on Pi OS
        assert all(r["controller_avahi_services"] == ["swarm-enroll.service"]
                   for r in storm["runs"])
    warmup = res["storm_warmup"]  # as large as the largest storm, reported apart
    assert warmup["n"] == 12 and warmup["makespan_s"] > 0
    assert "storm warm-up N=12, not counted" in (tmp_path / "latest.md").read_text()
    assert "| stolen by the hypervisor during it (cores) |" in (tmp_path / "latest.md").read_text()
    for key, per_write in (("storm_floor", 1), ("storm_floor_shared", 8)):
        floor = res[key]  # Docker's own writes of host documents, `per_write` in each
        assert (floor["n"], floor["per_write"]) == (12 // per_write * per_write, per_write)
        assert floor["docs_per_s"]["n"] >= 1 and floor["doc_bytes"] > 0
    restart = res["storm"]["12"]["restart_with_records"]
    assert restart["records"] == [12]

    fp = res["footprint"]
    assert fp["agent_rss_mb"]["n"] == 2 and fp["controller_rss_1000_mb"]["n"] == 1
    assert fp["import"]["import_rss"][-1]["module"] == "joserfc.jws"
    checkin = res["checkin"]  # the agent exited where avahi runs; one check-in, joined
    assert checkin["agent_exit"] == 0 and checkin["timer_took_over"]
    assert checkin["statuses"] == [0] and checkin["cpu_s"]["n"] == 1
    assert "samples" in res["profile"]["cpu"]  # a tiny storm may give py-spy no CPU sample
    assert res["profile"]["wall"]["samples"] > 0
    if "compare" in res:  # the proposals (tests/bench/proposals), unless merged meanwhile
        assert res["compare"]["storm"]["12"]["not_granted"]["max"] == 0
        assert res["compare"]["join"]["ratio"]["n"] == 1
    assert {t["target"] for t in res["targets"]}

    assert list_netns(PREFIX) == []  # torn down
