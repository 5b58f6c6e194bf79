"""Join overhead: `enroll-agent` on a fresh Pi vs a bare `docker swarm join` on its twin.

Each pair is two freshly added Pis (own namespace, dockerd, stand-in images, blank disk).
Agent side: t0 = spawning `enroll-agent run` (token rule, mDNS discovery, default agent
settings); bare side: t0 = running `docker swarm join --token <pasted> --advertise-addr
<ip> <manager>:2377` inside the twin. Both end when the manager's node list shows the
node Ready (polled every 50 ms by the same code). The order alternates between pairs.

The agent's log gives the split: process start -> first log line (interpreter and
imports), -> "found controller" (mDNS), -> "joining swarm" (pin check, nonce, signed
request, grant), -> Ready (the join itself).

Manual approval: a fresh Pi matching a `manual` rule; once its request is pending, the
admin approves through the admin API (t0) and the clock stops at Ready.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from deploy.lab.config import PiSpec
from deploy.lab.demo import admin_client, wait_for
from deploy.lab.lab import Lab, LabError

from .benchlab import CONTROLLER_PI, loadavg, wait_ready

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_times(path: Path) -> dict[str, float]:
    """Epoch times of the agent's milestones, from its log (ms resolution, local time)."""
    marks = {"first": None, "found": "found controller", "approved": ": approved",
             "joining": "joining swarm", "joined": ": joined", "pending": ": pending"}
    out: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for key, text in marks.items():
            if key not in out and (text is None or text in line):
                out[key] = t
    return out


class Pis:
    """Fresh Pis and the agents the benchmark started on them (kept for the footprint)."""

    def __init__(self, lab: Lab, agent_cmd: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.lab = lab
        ctl = lab.state()["controller"]
        self.pin, self.token = ctl["pin"], ctl["token"]
        self.agents: dict[str, subprocess.Popen] = {}
        self.added: list[str] = []
        self.agent_cmd = agent_cmd or [*lab.agent_cmd]
        self.env = env

    def add(self, name: str) -> dict[str, Any]:
        self.added.append(name)
        return self.lab.add_pi(name, agent=False)

    def unplug_all(self) -> None:
        """Stop the agents and pull every added Pi's plug (less background load after)."""
        self.stop_all()
        for name in self.added:
            self.lab.kill_pi(name)

    def start_agent(self, name: str, token: bool) -> tuple[subprocess.Popen, float, float]:
        node = self.lab.node(name)
        spec = PiSpec(name=name, model=node["model"], arch=node["arch"],
                      hardware_id=node["hardware_id"], ip=ipaddress.IPv4Address(node["ip"]),
                      token=token)
        conf = self.lab.write_agent_config(spec, self.pin, self.token if token else None)
        log = self.lab.log_path(name, "agent")
        t_wall, t0 = time.time(), time.monotonic()
        proc = self.lab.popen(name, [*self.agent_cmd, "run", "--config", str(conf)],
                              log=log, env=self.env)
        self.agents[name] = proc
        return proc, t_wall, t0

    def stop_all(self) -> None:
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.agents.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def agent_join(pis: Pis, mgr: Any, name: str) -> dict[str, Any]:
    proc, t_wall, t0 = pis.start_agent(name, token=True)
    t_ready = wait_ready(mgr, name, timeout=120)
    total = t_ready - t0
    ready_wall = t_wall + total
    marks = _log_times(pis.lab.log_path(name, "agent"))
    if proc.poll() is not None:
        raise LabError(f"the agent on {name} exited ({proc.returncode})")

    def since(key: str, ref: float) -> float | None:
        return marks[key] - ref if key in marks else None

    return {
        "total_s": total,
        "start_to_first_log_s": since("first", t_wall),
        "start_to_found_s": since("found", t_wall),
        "first_log_to_found_s": (marks["found"] - marks["first"]
                                 if "found" in marks and "first" in marks else None),
        "found_to_joining_s": (marks["joining"] - marks["found"]
                               if "joining" in marks and "found" in marks else None),
        "joining_to_ready_s": ready_wall - marks["joining"] if "joining" in marks else None,
    }


def bare_join(lab: Lab, mgr: Any, name: str, worker_token: str, manager: str) -> dict[str, Any]:
    ip = lab.node(name)["ip"]
    t0 = time.monotonic()
    r = lab.exec(name, ["docker", "swarm", "join", "--token", worker_token, "--advertise-addr",
                        ip, "--listen-addr", "0.0.0.0:2377", manager],
                 capture_output=True, timeout=120)
    t_cli = time.monotonic()
    if r.returncode != 0:
        raise LabError(f"bare docker swarm join on {name} failed: {r.stderr.strip()[-300:]}")
    t_ready = wait_ready(mgr, name, timeout=120)
    return {"total_s": t_ready - t0, "cli_s": t_cli - t0}


def run_join(lab: Lab, pairs: int, manual: int, log: Any = print, tag: str = "",
             agent_cmd: list[str] | None = None, env: dict[str, str] | None = None,
             ) -> tuple[dict[str, Any], Pis]:
    """Returns the results and the Pis whose agents still run (for the idle footprint).
    `tag` goes into the Pis' names; `agent_cmd`/`env` run another agent (a patched copy)."""
    pis = Pis(lab, agent_cmd, env)
    mgr = lab.docker(CONTROLLER_PI)
    mgr.swarm.reload()
    worker_token = mgr.swarm.attrs["JoinTokens"]["Worker"]
    manager = f"{lab.node(CONTROLLER_PI)['ip']}:2377"
    rows = []
    for i in range(1, pairs + 1):
        a, b = f"bj-{tag}a{i}", f"bj-{tag}b{i}"
        pis.add(a)
        pis.add(b)
        time.sleep(1.0)  # both daemons past their start-up work
        load = loadavg()
        if i % 2:
            agent = agent_join(pis, mgr, a)
            bare = bare_join(lab, mgr, b, worker_token, manager)
        else:
            bare = bare_join(lab, mgr, b, worker_token, manager)
            agent = agent_join(pis, mgr, a)
        row = {"pair": i, "agent": agent, "bare": bare,
               "ratio": agent["total_s"] / bare["total_s"], "loadavg": load,
               "agent_first": bool(i % 2)}
        rows.append(row)
        log(f"  pair {i}: agent {agent['total_s']:.2f}s (mDNS found after "
            f"{agent['start_to_found_s'] or float('nan'):.2f}s), bare {bare['total_s']:.2f}s, "
            f"ratio {row['ratio']:.2f}")

    admin = admin_client(lab)
    approvals = []
    for j in range(1, manual + 1):
        name = f"bm-{tag}{j}"
        pis.add(name)
        time.sleep(1.0)
        _, _, t_start = pis.start_agent(name, token=False)
        wait_for(f"{name} pending", lambda n=name: [x for x in admin.nodes("pending")
                                                     if x["hostname"] == n], 90, interval=0.2)
        t_pending = time.monotonic()
        t0 = time.monotonic()
        admin.approve(name, reason="benchmark")
        t_ready = wait_ready(mgr, name, timeout=120)
        approvals.append({"approval_to_ready_s": t_ready - t0,
                          "start_to_pending_s": t_pending - t_start})
        log(f"  manual {name}: approval -> Ready {t_ready - t0:.2f}s")
    mgr.close()
    return {"pairs": rows, "manual": approvals}, pis
