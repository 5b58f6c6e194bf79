"""Join overhead, like with like: a Pi's boot with the agent against one with a bare join.

Each pair is two freshly added Pis (own namespace, stand-in images, blank agent state),
whose dockerd is then stopped (its disk kept), so that both sides start from a Pi whose
Docker is not running yet, as at boot:
- agent side: t0 = dockerd and `enroll-agent run` started together (as systemd starts
  them: the agent's unit requires Docker but does not wait for it; token rule, mDNS
  discovery, default agent settings);
- bare side: t0 = dockerd started; once it answers, `docker swarm join --token <pasted>
  --advertise-addr <ip> <manager>:2377` (what a person's boot script would do).
Both end when the manager's node list shows the node Ready (polled every 50 ms by the
same code). The order alternates between pairs. Docker's start is timed the same way on
both sides (its API polled every 20 ms).

The agent's log gives its steps, each from t0: first log line (interpreter and imports),
"found controller" (mDNS), ": approved" (pin check on the connection that then carries
the nonce, request and grant; the request waits for Docker's swarm state), "joining swarm"
(grant checked), then Ready (the join itself).

Manual approval: a fresh Pi matching a `manual` rule; once its request is pending, the
admin approves through the admin API (t0) and the clock stops at Ready.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.swarm import DockerError, connect
from deploy.lab import dockerd, procs
from deploy.lab.config import PiSpec
from deploy.lab.demo import admin_client, wait_for
from deploy.lab.lab import Lab, LabError
from deploy.lab.netns import netns_path

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


@dataclass(frozen=True)
class Variant:
    """Another agent to measure beside the tree's own, e.g. a patched copy on PYTHONPATH."""

    tag: str
    agent_cmd: list[str]
    env: dict[str, str]


class DockerClock(threading.Thread):
    """Polls a starting dockerd's /info every 20 ms; `answered` is when it first did."""

    def __init__(self, docker_host: str) -> None:
        super().__init__(daemon=True)
        self.docker = connect(docker_host)
        self.docker.timeout = 2.0
        self.t0 = time.monotonic()
        self.answered: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = self.t0 + 120
        while time.monotonic() < deadline:
            try:
                self.docker.get("/info")
            except DockerError:
                time.sleep(0.02)
                continue
            self.answered = time.monotonic()
            break
        self.done.set()

    def wait(self) -> float:
        """Seconds from the start to Docker's first answer."""
        self.done.wait(130)
        if self.answered is None:
            raise LabError("dockerd did not answer within 120 s")
        return self.answered - self.t0


class Pis:
    """Fresh Pis and the agents the benchmark started on them (kept for the footprint)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        ctl = lab.state()["controller"]
        self.pin, self.token = ctl["pin"], ctl["token"]
        self.agents: dict[str, subprocess.Popen] = {}  # the tree's own agents
        self.others: dict[str, subprocess.Popen] = {}  # agents of a variant (patched copy)
        self.added: list[str] = []
        self.clocks: dict[str, DockerClock | None] = {}

    def add(self, name: str) -> dict[str, Any]:
        self.added.append(name)
        return self.lab.add_pi(name, agent=False)

    def docker_off(self, name: str) -> None:
        """Stop the Pi's dockerd, keeping its disk: its next start is a boot's."""
        spec = self.lab.daemon_spec(name)
        pid = dockerd.daemon_pid(spec, self.lab.node(name).get("dockerd_pid"))
        if pid:
            procs.terminate([pid], timeout=20)

    def docker_on(self, name: str) -> DockerClock:
        """Start the Pi's dockerd now; the clock says when its API first answers."""
        spec = self.lab.daemon_spec(name)
        clock = DockerClock(spec.docker_host)
        dockerd.spawn(spec)
        clock.start()
        return clock

    def unplug_all(self) -> None:
        """Stop the agents and pull every added Pi's plug (less background load after)."""
        self.stop_all()
        for name in self.added:
            self.lab.kill_pi(name)

    def start_agent(self, name: str, token: bool, variant: Variant | None = None,
                    docker_off: bool = False) -> tuple[subprocess.Popen, float, float]:
        """`enroll-agent run` in the Pi's network namespace; with `docker_off`, its dockerd
        is started in the same instant (the Pi's boot)."""
        node = self.lab.node(name)
        spec = PiSpec(name=name, model=node["model"], arch=node["arch"],
                      hardware_id=node["hardware_id"], ip=ipaddress.IPv4Address(node["ip"]),
                      token=token)
        # the hostname from the config: the Pi's UTS namespace is dockerd's, not up yet
        conf = self.lab.write_agent_config(spec, self.pin, self.token if token else None,
                                           {"hostname": name})
        log = self.lab.log_path(name, "agent")
        cmd = variant.agent_cmd if variant else self.lab.agent_cmd
        env = dict(os.environ, **(variant.env if variant else {}))
        argv = ["nsenter", f"--net={netns_path(self.lab.netns_name(name))}", "--",
                *cmd, "run", "--config", str(conf)]
        with open(log, "ab") as out:
            t_wall, t0 = time.time(), time.monotonic()
            clock = self.docker_on(name) if docker_off else None
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.clocks[name] = clock
        (self.others if variant else self.agents)[name] = proc
        return proc, t_wall, t0

    def stop_all(self) -> None:
        procs = [*self.agents.values(), *self.others.values()]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def agent_join(pis: Pis, mgr: Any, name: str, variant: Variant | None = None) -> dict[str, Any]:
    pis.docker_off(name)
    proc, t_wall, t0 = pis.start_agent(name, token=True, variant=variant, docker_off=True)
    t_ready = wait_ready(mgr, name, timeout=120)
    total = t_ready - t0
    ready_wall = t_wall + total
    clock = pis.clocks[name]
    docker_s = clock.wait() if clock else None
    marks = _log_times(pis.lab.log_path(name, "agent"))
    if proc.poll() is not None and proc.returncode != 0:
        raise LabError(f"the agent on {name} exited ({proc.returncode})")

    def since(key: str) -> float | None:
        return marks[key] - t_wall if key in marks else None

    def between(a: str, b: str) -> float | None:
        return marks[b] - marks[a] if a in marks and b in marks else None

    return {
        "total_s": total,
        "start_to_first_log_s": since("first"),
        "start_to_found_s": since("found"),
        "start_to_docker_s": docker_s,
        "start_to_approved_s": since("approved"),
        "start_to_joining_s": since("joining"),
        "first_log_to_found_s": between("first", "found"),
        "found_to_joining_s": between("found", "joining"),
        "approved_to_joining_s": between("approved", "joining"),
        "joining_to_ready_s": ready_wall - marks["joining"] if "joining" in marks else None,
    }


def bare_join(pis: Pis, mgr: Any, name: str, worker_token: str, manager: str,
              ) -> dict[str, Any]:
    lab = pis.lab
    ip = lab.node(name)["ip"]
    pis.docker_off(name)
    t0 = time.monotonic()
    docker_s = pis.docker_on(name).wait()
    t_cli0 = time.monotonic()
    r = lab.exec(name, ["docker", "swarm", "join", "--token", worker_token, "--advertise-addr",
                        ip, "--listen-addr", "0.0.0.0:2377", manager],
                 capture_output=True, timeout=120)
    t_cli = time.monotonic()
    if r.returncode != 0:
        raise LabError(f"bare docker swarm join on {name} failed: {r.stderr.strip()[-300:]}")
    t_ready = wait_ready(mgr, name, timeout=120)
    return {"total_s": t_ready - t0, "start_to_docker_s": docker_s, "cli_s": t_cli - t_cli0,
            "cli_to_ready_s": t_ready - t_cli}


def run_join(lab: Lab, pairs: int, manual: int, log: Any = print,
             variants: tuple[Variant, ...] = ()) -> tuple[dict[str, Any], Pis]:
    """Returns the results and the Pis whose agents still run (for the idle footprint).

    Each pair is one fresh Pi for the agent, one for the bare join, plus one per variant
    (whose ratio is taken against the same bare join); the order rotates between pairs.
    """
    pis = Pis(lab)
    mgr = lab.docker(CONTROLLER_PI)
    mgr.swarm.reload()
    worker_token = mgr.swarm.attrs["JoinTokens"]["Worker"]
    manager = f"{lab.node(CONTROLLER_PI)['ip']}:2377"
    rows = []
    for i in range(1, pairs + 1):
        a, b = f"bj-a{i}", f"bj-b{i}"
        names = {"agent": a, "bare": b, **{v.tag: f"bj-{v.tag}{i}" for v in variants}}
        for name in names.values():
            pis.add(name)
        time.sleep(1.0)  # the daemons past their start-up work
        load = loadavg()
        order = list(names)
        shift = (i - 1) % len(order)
        order = order[shift:] + order[:shift]
        got: dict[str, dict[str, Any]] = {}
        for what in order:
            if what == "bare":
                got[what] = bare_join(pis, mgr, b, worker_token, manager)
            else:
                variant = next((v for v in variants if v.tag == what), None)
                got[what] = agent_join(pis, mgr, names[what], variant)
        bare = got["bare"]
        row = {"pair": i, "agent": got["agent"], "bare": bare,
               "ratio": got["agent"]["total_s"] / bare["total_s"], "loadavg": load,
               "order": order,
               "variants": {v.tag: {"agent": got[v.tag],
                                    "ratio": got[v.tag]["total_s"] / bare["total_s"]}
                            for v in variants}}
        rows.append(row)
        log(f"  pair {i}: agent {row['agent']['total_s']:.2f}s (mDNS found after "
            f"{row['agent']['start_to_found_s'] or float('nan'):.2f}s), bare "
            f"{bare['total_s']:.2f}s, ratio {row['ratio']:.2f}"
            + "".join(f"; {t}: {x['agent']['total_s']:.2f}s, ratio {x['ratio']:.2f}"
                      for t, x in row["variants"].items()))

    admin = admin_client(lab)
    approvals = []
    for j in range(1, manual + 1):
        name = f"bm-{j}"
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
