"""Enrollment storm: one real controller process on one core against N simulated agents.

Per run: a fresh `enroll-controller init` state dir on the `storm` Pi (whose dockerd is a
real swarm, initialised by the first init), `enroll-controller serve` started inside that
Pi under `taskset -c 0`, a bootstrap token with N uses, then the load generator
(storm_client.py) inside the `load` Pi under `taskset -c 1`. Unless `--storm-managers 1`,
the swarm has three managers, as an HA cluster has: `storm2` and `storm3` join it as
managers and run a controller each (on core 1), which follows the state as every
manager's does; so each write is a Raft proposal that two of three managers must take.
The storm Pi runs a real avahi-daemon, as Raspberry Pi OS does, so its controller
announces through it and never loads python-zeroconf; the other managers run none
(zeroconf). Every controller's CPU time and VmHWM come from /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from controller.dockerapi import DockerAPI
from controller.memory import CHECK_EVERY
from controller.state.swarm import STATE_LABEL, SwarmBackend
from deploy.lab.avahi import LabAvahi
from deploy.lab.lab import Lab, LabError

from .benchlab import (
    FOLLOWER_PIS,
    LOAD_PI,
    STORM_PI,
    ProcessSampler,
    avahi,
    cpu_seconds,
    loadavg,
    settle,
    settle_host,
    vm_kb,
)
from .stats import percentile

CLIENT = Path(__file__).resolve().parent / "storm_client.py"
STORM_RULES = """\
[[rule]]
match = "storm-*"
role = "worker"
approve = "token"
"""
CONTROLLER_CORE = "0"
LOAD_CORE = "1"
# "idle" is this long after the last work: the controller trims freed memory after busy
# windows of CHECK_EVERY seconds (controller/memory.py)
IDLE_WAIT = 2 * CHECK_EVERY + 1


def variant_env(src: Path) -> dict[str, str]:
    """Environment that makes Python import agent/ and controller/ from `src`."""
    return {"PYTHONPATH": str(src), "PYTHONSAFEPATH": "1"}


def check_variant(src: Path) -> None:
    """Refuse to measure a 'patched copy' that Python would not actually import."""
    r = subprocess.run([sys.executable, "-c", "import agent.mdns, controller.server as s; "
                        "print(agent.mdns.__file__); print(s.__file__)"],
                       env={**os.environ, **variant_env(src)}, capture_output=True, text=True,
                       check=True)
    files = r.stdout.split()
    if not files or not all(f.startswith(str(src)) for f in files):
        raise LabError(f"the patched copy {src} is not what Python imports: {files}")


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # lab addresses only, never a proxy
    return s


def controller_cmd(lab: Lab, src: Path | None) -> tuple[list[str], dict[str, str]]:
    """The controller's command and environment: this tree's, or `src`'s (a patched copy
    of the source tree shadows the installed one; PYTHONSAFEPATH: the working directory,
    this tree, must not come first on sys.path)."""
    if src is None:
        return [*lab.controller_cmd], {}
    return [sys.executable, "-m", "controller.cli"], variant_env(src)


class StormController:
    """One `enroll-controller serve` on the storm Pi, from a fresh state dir."""

    def __init__(self, lab: Lab, label: str, src: Path | None = None,
                 avahi: LabAvahi | None = None) -> None:
        self.lab = lab
        self.avahi = avahi  # the storm Pi's avahi-daemon, as Raspberry Pi OS runs one
        self.dir = lab.pi_dir(STORM_PI) / f"ctl-{label}"
        self.src = src
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.ip = lab.node(STORM_PI)["ip"]

    def _cmd(self) -> tuple[list[str], dict[str, str]]:
        return controller_cmd(self.lab, self.src)

    def init(self) -> None:
        self._forget_earlier_runs()
        rules = self.dir.parent / "storm-rules.toml"
        rules.write_text(STORM_RULES)
        cmd, env = self._cmd()
        r = self.lab.exec(STORM_PI, [*cmd, "init", "--state-dir", str(self.dir),
                                     "--advertise-addr", self.ip, "--docker-host",
                                     self.lab.docker_host(STORM_PI), "--rules", str(rules),
                                     "--json"], env=env, capture_output=True, timeout=120)
        if r.returncode != 0:
            raise LabError(f"enroll-controller init for the storm failed: {r.stderr[-500:]}")
        self.info = json.loads(r.stdout.strip().splitlines()[-1])
        if self.avahi is not None:  # announce through it, as on Raspberry Pi OS
            conf = self.dir / "controller.toml"
            text = re.sub(r'(?m)^avahi_services_dir = .*$',
                          f'avahi_services_dir = "{self.avahi.services_dir}"', conf.read_text())
            conf.write_text(re.sub(r'(?m)^avahi_run_dir = .*$',
                                   f'avahi_run_dir = "{self.avahi.run_dir}"', text))

    def _forget_earlier_runs(self) -> None:
        """The cluster state lives in the swarm: each run starts from none, as on a new
        cluster (a run of the same N after another would find its names taken)."""
        client = self.lab.docker(STORM_PI)
        try:
            if client.info()["Swarm"]["LocalNodeState"] != "active":
                return  # the first run: its init makes the swarm
            for config in client.api.configs(filters={"label": [STATE_LABEL]}):
                client.api.remove_config(config["ID"])
        finally:
            client.close()

    def start(self) -> int:
        cmd, env = self._cmd()
        env = {**env, **(self.avahi.env if self.avahi is not None else {})}
        self.proc = self.lab.popen(
            STORM_PI, ["taskset", "-c", CONTROLLER_CORE, *cmd, "serve", "--state-dir",
                       str(self.dir), "--log-level", "warning"],
            log=self.dir.parent / f"{self.dir.name}.log", env=env)
        deadline = time.monotonic() + 60
        with _session() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise LabError(f"storm controller exited ({self.proc.returncode}); see "
                                   f"{self.dir.parent / (self.dir.name + '.log')}")
                try:
                    r = s.get(self.url + "/healthz", verify=self.ca, timeout=3)
                    if r.status_code == 200:
                        return self.proc.pid
                except requests.RequestException:
                    pass
                time.sleep(0.2)
        raise LabError("storm controller not healthy within 60s")

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.pem")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        with _session() as s:
            r = s.request(method, self.url + path, verify=self.ca, timeout=120,
                          headers={"Authorization": f"Bearer {self.info['admin_token']}"},
                          **kwargs)
        if r.status_code >= 400:
            raise LabError(f"{method} {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def token(self, uses: int) -> str:
        return self.admin("POST", "/v1/tokens", json={"ttl_seconds": 3600, "uses": uses,
                                                     "description": "storm"})["token"]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Followers:
    """The storm swarm's other managers, each with a controller that follows the state
    (from `src`, as the storm's own controller: an A/B run compares whole trees)."""

    def __init__(self, lab: Lab, label: str, ca: str, src: Path | None = None) -> None:
        self.lab = lab
        self.label = label
        self.ca = ca
        self.src = src
        self.procs: dict[str, subprocess.Popen] = {}

    def _join(self) -> None:
        """Make them managers of the storm Pi's swarm (once: they stay across runs)."""
        lead = self.lab.docker(STORM_PI)
        try:
            token = lead.swarm.attrs["JoinTokens"]["Manager"]
        finally:
            lead.close()
        for name in FOLLOWER_PIS:
            client = self.lab.docker(name)
            try:
                if client.info()["Swarm"]["LocalNodeState"] != "active":
                    client.swarm.join(remote_addrs=[f"{self.lab.node(STORM_PI)['ip']}:2377"],
                                      join_token=token, listen_addr="0.0.0.0:2377",
                                      advertise_addr=self.lab.node(name)["ip"])
            finally:
                client.close()

    def start(self) -> None:
        self._join()
        for name in FOLLOWER_PIS:
            run = self.lab.pi_dir(name) / f"ctl-{self.label}"
            ctl, env = controller_cmd(self.lab, self.src)
            cmd = [*ctl, "serve", "--state-dir", str(run),
                   "--docker-host", self.lab.docker_host(name),
                   "--viz-socket-dir", str(run / "viz"), "--log-level", "warning"]
            self.procs[name] = self.lab.popen(name, ["taskset", "-c", LOAD_CORE, *cmd],
                                              log=run.parent / f"{run.name}.log", env=env)
        deadline = time.monotonic() + 90
        with _session() as s:
            for name, proc in self.procs.items():
                url = f"https://{self.lab.node(name)['ip']}:8443/healthz"
                while True:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise LabError(f"the follower controller on {name} did not serve; "
                                       f"see {self.lab.pi_dir(name)}/ctl-{self.label}.log")
                    try:
                        if s.get(url, verify=self.ca, timeout=3).status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    time.sleep(0.3)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = {}


def run_load(lab: Lab, ctl: StormController, n: int, token: str, concurrency: int,
             deadline: float) -> dict[str, Any]:
    argv = ["taskset", "-c", LOAD_CORE, sys.executable, str(CLIENT), "--url", ctl.url,
            "--pin", ctl.info["pin"], "--n", str(n),
            "--concurrency", str(concurrency), "--address", lab.node(LOAD_PI)["ip"],
            "--deadline", str(deadline)]
    r = lab.exec(LOAD_PI, argv, capture_output=True, timeout=deadline + 120,
                 env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                      "STORM_TOKEN": token})  # not in argv, which every user can read
    if r.returncode != 0:
        raise LabError(f"storm client failed ({r.returncode}): {r.stderr[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def storm_once(lab: Lab, n: int, label: str, concurrency: int, deadline: float,
               src: Path | None = None, during: Any = None,
               records_footprint: bool = False, managers: int = 3,
               idle: float = IDLE_WAIT) -> dict[str, Any]:
    """One storm of N agents against a fresh controller; `during(pid)` may start a profiler
    and return a stop() callable; `idle`: seconds after the work before the idle RSS."""
    with avahi(lab, STORM_PI) as daemon:
        return _storm_once(lab, n, label, concurrency, deadline, src, during,
                           records_footprint, managers, daemon, idle)


def _storm_once(lab: Lab, n: int, label: str, concurrency: int, deadline: float,
                src: Path | None, during: Any, records_footprint: bool, managers: int,
                daemon: LabAvahi, idle: float) -> dict[str, Any]:
    ctl = StormController(lab, label, src, daemon)
    ctl.init()
    followers = Followers(lab, label, ctl.ca, src)
    try:
        ctl.start()
        announced = sorted(p.name for p in daemon.services_dir.glob("*.service"))
        if managers > 1:
            followers.start()
        token = ctl.token(n)
        settled = settle(ctl.pid, below=0.03, timeout=30)
        for pid in followers.pids:
            settle(pid, below=0.03, timeout=30)
        host_before = settle_host()
        vm0, cpu0, load0 = vm_kb(ctl.pid), cpu_seconds(ctl.pid), loadavg()
        fcpu0 = [cpu_seconds(pid) for pid in followers.pids]
        stop_profiler = during(ctl.pid) if during else None
        sampler = ProcessSampler(ctl.pid, (lab.state_dir, lab.run_base))
        try:
            with sampler:
                out = run_load(lab, ctl, n, token, concurrency, deadline)
        finally:
            profile = stop_profiler() if stop_profiler else None
        named = {ctl.pid: f"controller, serving ({STORM_PI})",
                 **{p.pid: f"controller, following ({name})"
                    for name, p in followers.procs.items()}}
        cpu1, vm1 = cpu_seconds(ctl.pid), vm_kb(ctl.pid)
        fcpu = sum(cpu_seconds(pid) for pid in followers.pids) - sum(fcpu0)
        # what else the host ran during the storm (dockerd, the profiler, other people's
        # labs on a shared machine), in cores: a noisy run shows here
        other = (out["host_busy_s"] - (cpu1 - cpu0) - fcpu - out["client_cpu_s"]) / \
            out["elapsed"]
        for pid in followers.pids:  # until they have read what the storm wrote
            settle(pid, below=0.03, timeout=60)
        time.sleep(idle)
        vm_idle = vm_kb(ctl.pid)
        fvm = [vm_kb(pid) for pid in followers.pids]
        starts, grants = out.pop("start"), out.pop("grant")
        latency = [g - s for s, g in zip(starts, grants, strict=True)]
        elapsed_grants = max(grants) if grants else out["elapsed"]
        result: dict[str, Any] = {
            "n": n, "label": label, **out,
            "makespan_s": elapsed_grants,
            "grants_per_s": out["granted"] / elapsed_grants if elapsed_grants else 0.0,
            "latency_p50_s": percentile(latency, 50), "latency_p95_s": percentile(latency, 95),
            "latency_p99_s": percentile(latency, 99), "latency_max_s": max(latency, default=0),
            "since_t0_p50_s": percentile(grants, 50), "since_t0_p99_s": percentile(grants, 99),
            "controller_cpu_s": cpu1 - cpu0,
            "controller_cpu_ms_per_grant": 1000 * (cpu1 - cpu0) / max(out["granted"], 1),
            "controller_cpu_share": (cpu1 - cpu0) / out["elapsed"] if out["elapsed"] else 0.0,
            "controller_rss_before_mb": vm0["VmRSS"] / 1024,
            "controller_peak_rss_mb": vm1["VmHWM"] / 1024,
            "controller_rss_after_idle_mb": vm_idle["VmRSS"] / 1024,
            "managers": managers, **_followers_figures(fvm, fcpu, out["granted"]),
            "controller_avahi_services": announced,
            "controller_threads": _threads(ctl.pid), "settled_s": settled,
            "cpu_by_process": _with_client(sampler.cores(named), out["client_cpu_s"]),
            "loadavg_before": load0, "other_cpu_cores": other,
            "host_cores_busy_before": host_before,
        }
        if profile is not None:
            result["profile"] = profile
        result.update(store_write_latency(lab))
        if records_footprint:
            result["restart_with_records"] = _restart_footprint(ctl, n, idle)
        return result
    finally:
        followers.stop()
        ctl.stop()


def _with_client(cpu: dict[str, Any], client_cpu_s: float) -> dict[str, Any]:
    """The load generator by its own count, from t0: the sampler's counts it from before
    it began, with the keys it makes before t0."""
    cores = {**cpu["cores"], CLIENT.stem: client_cpu_s / max(cpu["window_s"], 1e-9)}
    return {**cpu, "cores": dict(sorted(cores.items(), key=lambda kv: -kv[1]))}


def _followers_figures(vms: list[dict[str, int]], cpu_s: float,
                       granted: int) -> dict[str, float | None]:
    """The other managers' controllers, the worst of them (None without any)."""
    if not vms:
        return dict.fromkeys(("follower_peak_rss_mb", "follower_rss_after_idle_mb",
                              "follower_cpu_ms_per_grant"))
    return {"follower_peak_rss_mb": max(vm["VmHWM"] for vm in vms) / 1024,
            "follower_rss_after_idle_mb": max(vm["VmRSS"] for vm in vms) / 1024,
            "follower_cpu_ms_per_grant": 1000 * cpu_s / len(vms) / max(granted, 1)}


def store_write_latency(lab: Lab, writes: int = 50) -> dict[str, float]:
    """One document written `writes` times under compare-and-swap, as the controller writes
    (each write one Raft proposal of the storm Pi's three-manager swarm)."""
    backend = SwarmBackend(DockerAPI(lab.docker_host(STORM_PI)))
    took = []
    backend.create("bench/latency", {"i": 0})
    for i in range(1, writes + 1):
        doc = backend.get("bench/latency")  # a write does not say its new version
        assert doc is not None
        t = time.perf_counter()
        backend.update(doc, {"i": i, "pad": "x" * 2000})
        took.append(1000 * (time.perf_counter() - t))
    backend.delete(backend.get("bench/latency"))
    return {"store_write_p50_ms": percentile(took, 50), "store_write_p95_ms": percentile(took, 95)}


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _restart_footprint(ctl: StormController, n: int, idle: float) -> dict[str, Any]:
    """The controller restarted over the N records of the storm: idle RSS, after listing."""
    ctl.stop()
    ctl.start()
    settle(ctl.pid, below=0.03, timeout=30)
    idle_rss = vm_kb(ctl.pid)["VmRSS"]
    nodes = ctl.admin("GET", "/v1/nodes", params={"limit": 1000})["nodes"]  # one page
    time.sleep(idle)
    vm = vm_kb(ctl.pid)
    records = sum(1 for x in nodes if str(x.get("hostname", "")).startswith("storm-"))
    return {"records": records, "expected": n,
            "rss_idle_mb": idle_rss / 1024, "rss_after_list_mb": vm["VmRSS"] / 1024,
            "peak_rss_mb": vm["VmHWM"] / 1024}
