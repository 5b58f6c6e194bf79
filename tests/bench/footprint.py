"""Footprint: the agent idle after joining (RSS, CPU), and its import time.

The controller's RSS with 1,000 records is measured by the storm (storm.py), which
leaves a controller with exactly those records behind.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .benchlab import cpu_seconds, tree_vm_kb

# what `enroll-agent run` imports before it logs its first line
RUN_IMPORTS = ("import agent.cli, agent.discovery, agent.enroll, agent.mdns, "
               "agent.identity, agent.wire.mdns")


def wait_joined(log: Path, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ": joined" in log.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def agent_idle(pids: dict[str, int], seconds: float, interval: float = 1.0) -> dict[str, Any]:
    """Sample every agent over the same window: RSS (summed over the agent's processes)
    each `interval`, CPU over the window."""
    cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
    rss: dict[str, list[int]] = {n: [] for n in pids}
    hwm: dict[str, int] = {}
    split: dict[str, tuple[int, int]] = {}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for n, p in pids.items():
            vm = tree_vm_kb(p)
            rss[n].append(vm["VmRSS"])
            hwm[n] = vm["VmHWM"]
            split[n] = (vm.get("RssAnon", 0), vm.get("RssFile", 0))
        time.sleep(interval)
    window = time.monotonic() - t0
    per_agent = {}
    for n, p in pids.items():
        per_agent[n] = {
            "rss_median_mb": statistics.median(rss[n]) / 1024, "rss_max_mb": max(rss[n]) / 1024,
            "peak_rss_mb": hwm[n] / 1024,
            "rss_anon_mb": split[n][0] / 1024, "rss_file_mb": split[n][1] / 1024,
            "cpu_percent": 100 * (cpu_seconds(p) - cpu0[n]) / window,
            "threads": len(list(Path(f"/proc/{p}/task").iterdir())),
        }
    return {"window_s": window, "agents": per_agent}


_LADDER = """
import importlib, json
def rss():
    d = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "RssAnon", "RssFile")):
            k, v = line.split(":")
            d[k] = int(v.split()[0]) / 1024
    return d
out = [{"module": "(interpreter)", **rss()}]
for m in MODULES:
    importlib.import_module(m)
    out.append({"module": m, **rss()})
print(json.dumps(out))
"""
LADDER_MODULES = ["ssl", "click", "zeroconf", "agent.cli", "agent.enroll", "agent.mdns",
                  "agent.supervise", "agent.discovery", "cryptography.x509", "joserfc.jws"]


def import_rss() -> list[dict[str, Any]]:
    """RSS after each library the agent imports, in one interpreter, in this order: first
    what the joined agent runs, then what only enrollment adds (the pin check, the grant)."""
    code = _LADDER.replace("MODULES", repr(LADDER_MODULES))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows = json.loads(r.stdout)
    for prev, row in itertools.pairwise(rows):
        row["added_mb"] = row["VmRSS"] - prev["VmRSS"]
    return rows


def _wall(code: str, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        out.append(time.perf_counter() - t)
    return out


def import_time(reps: int = 5) -> dict[str, Any]:
    """Wall time of a bare interpreter, of `import agent.cli`, and of what `run` imports;
    plus the heaviest modules by cumulative import time (-X importtime)."""
    bare = _wall("pass", reps)
    cli = _wall("import agent.cli", reps)
    run = _wall(RUN_IMPORTS, reps)
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", RUN_IMPORTS],
                       capture_output=True, text=True, check=True)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = [{"module": mod, "cumulative_ms": us / 1000}
           for us, depth, mod in sorted(rows, reverse=True) if depth <= 3][:10]
    return {"interpreter_s": bare, "import_agent_cli_s": cli, "import_run_path_s": run,
            "top_cumulative": top, "import_rss": import_rss()}
