"""The check-in (issue 13): where avahi runs, what of the agent stays resident once the Pi
has joined, and what one `enroll-agent check` costs in CPU.

In a fresh bench Pi with a real avahi-daemon in its namespace (deploy/lab/avahi.py: its
own D-Bus, its own run and services dirs, which the agent is pointed at): `enroll-agent
run` (token rule, mDNS) joins, and should exit by itself; the RSS of every agent process
left in that Pi is then summed (target 0 MB).
Then `enroll-agent check` runs `reps` times where the timer would; each run's utime +
stime, its children's included (wait4), is its CPU cost (target <= 2 s). For scale, the
same for the manager test that enroll-controller-ensure.timer runs every 30 s (its
`ExecCondition=`, the docker CLI; no target).

The agent's config has no `controller_command` (a lab agent's controller child is what
keeps the other bench agents resident): as on a Pi with systemd.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from deploy.lab import procs
from deploy.lab.config import PiSpec
from deploy.lab.lab import Lab

from .benchlab import avahi
from .stats import summary

PI = "bj-c1"  # the bench rules let bj-* in by token
# enroll-controller-ensure.service's ExecCondition= (the unit's `$$` is a plain `$`)
ENSURE_TEST = ["sh", "-c", 'test "$(docker info --format "{{.Swarm.ControlAvailable}}" '
               '2>/dev/null)" = true']


def agent_rss_kb(lab: Lab, name: str) -> tuple[int, int]:
    """(processes, summed VmRSS in kB) of every enroll-agent process in the Pi's netns."""
    pid = lab.node(name)["pid"]  # its dockerd: the Pi's namespaces
    netns = procs.netns_of(pid)
    count = kb = 0
    for p in procs.pids():
        if procs.netns_of(p) != netns or not any(
                name in a for a in procs.cmdline(p)
                for name in ("enroll-agent", "agent.cli", "agent.daemon")):
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    count, kb = count + 1, kb + int(line.split()[1])
    return count, kb


def cpu_of(lab: Lab, name: str, argv: list[str], log: Path,
           env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run argv in the Pi: (CPU seconds with its children, exit status)."""
    proc = lab.popen(name, argv, log=log, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return usage.ru_utime + usage.ru_stime, proc.returncode


def run_checkin(lab: Lab, reps: int, log: Any = print) -> dict[str, Any]:
    ctl = lab.state()["controller"]
    node = lab.add_pi(PI, agent=False)
    try:
        spec = PiSpec(name=PI, model=node["model"], arch=node["arch"],
                      hardware_id=node["hardware_id"], ip=ipaddress.IPv4Address(node["ip"]),
                      token=True)
        agent_log = lab.log_path(PI, "agent")
        with avahi(lab, PI) as daemon:
            conf = lab.write_agent_config(spec, ctl["pin"], ctl["token"], {
                "controller_command": None, "controller_unit": "", "agent_unit": "",
                "avahi_services_dir": str(daemon.services_dir),
                "avahi_run_dir": str(daemon.run_dir)})
            t0 = time.monotonic()
            agent = lab.popen(PI, [*lab.agent_cmd, "run", "--config", str(conf)],
                              log=agent_log, env=daemon.env)
            try:
                exit_code: int | None = agent.wait(180)
            except subprocess.TimeoutExpired:
                exit_code = None  # still resident: measured so, then stopped
            joined_s = time.monotonic() - t0
            time.sleep(1.0)
            count, kb = agent_rss_kb(lab, PI)
            if exit_code is None:
                agent.terminate()
                agent.wait(15)
            log(f"  agent after joining with avahi: exit {exit_code} after {joined_s:.1f} s; "
                f"{count} agent process(es) left, {kb / 1024:.1f} MB")
            check = [*lab.agent_cmd, "check", "--config", str(conf)]
            runs = [cpu_of(lab, PI, check, agent_log, daemon.env) for _ in range(reps)]
            ensure = [cpu_of(lab, PI, ENSURE_TEST, agent_log)[0] for _ in range(reps)]
        log("  check-in CPU: " + ", ".join(f"{c:.2f} s (exit {s})" for c, s in runs))
        return {"agent_exit": exit_code, "agent_run_s": joined_s,
                "resident_processes": count, "resident_mb": kb / 1024,
                "cpu_s": summary([c for c, _ in runs]), "statuses": [s for _, s in runs],
                "ensure_test_cpu_s": summary(ensure),
                "timer_took_over": "checks in from now on" in agent_log.read_text(
                    errors="replace")}
    finally:
        lab.kill_pi(PI)
