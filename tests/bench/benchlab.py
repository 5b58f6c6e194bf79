"""The benchmarks' own lab: a prefix, state dir and subnet of its own, always torn down.

Never the default lab (`selab-`, /var/lib/swarm-enroll-lab, 198.18.0.0/24) that other
people's `make demo` and e2e runs use: every name the Lab class derives (namespaces
`<prefix><pi>` and `<prefix>lan`, run dir /run/<prefix>, host veth `<prefix>0`, cgroup
parents `<prefix><pi>`) comes from the prefix, and the addresses from the subnet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from deploy.lab.avahi import LabAvahi
from deploy.lab.config import load_cluster
from deploy.lab.lab import DEFAULT_PREFIX, DEFAULT_STATE_DIR, Lab, LabError
from deploy.lab.locks import locked

from .storm_client import host_cpu_seconds

CONTROLLER_PI = "ctl"  # runs the lab's controller (swarm A): join benchmarks
STORM_PI = "storm"  # runs the storm's controllers (swarm B)
FOLLOWER_PIS = ("storm2", "storm3")  # swarm B's other managers, a controller each
LOAD_PI = "load"  # runs the storm's load generator


@dataclass(frozen=True)
class BenchLabSpec:
    state_dir: Path = Path("/var/lib/swarm-enroll-bench")
    prefix: str = "sebench-"
    subnet: str = "198.18.1.0/24"

    def check(self) -> None:
        if self.prefix == DEFAULT_PREFIX or self.state_dir == DEFAULT_STATE_DIR:
            raise LabError("the benchmarks never use the default lab (prefix selab-, "
                           f"{DEFAULT_STATE_DIR}); pick another prefix and state dir")
        if self.subnet.startswith("198.18.0."):
            raise LabError("198.18.0.0/24 is the default lab's subnet; use another /24")


RULES = """\
# Benchmark rules: bj-* are the join-overhead Pis (token), bm-* wait for an admin.
[[rule]]
match = "bm-*"
role = "worker"
approve = "manual"

[[rule]]
match = "bj-*"
role = "worker"
approve = "token"
"""


def cluster_text(spec: BenchLabSpec) -> str:
    pis = [(CONTROLLER_PI, "Raspberry Pi Zero W Rev 1.1", "armv6l"),
           (STORM_PI, "Raspberry Pi Zero W Rev 1.1", "armv6l"),
           (LOAD_PI, "Raspberry Pi 3 Model B Rev 1.2", "armv7l"),
           *((name, "Raspberry Pi 3 Model B Rev 1.2", "armv7l") for name in FOLLOWER_PIS)]
    lines = ["[lab]", f'subnet = "{spec.subnet}"', 'rules = "rules.toml"',
             f'controller = "{CONTROLLER_PI}"', ""]
    for i, (name, model, arch) in enumerate(pis, start=1):
        lines += ["[[pi]]", f'name = "{name}"', f'model = "{model}"', f'arch = "{arch}"',
                  f'hardware_id = "00000000be0c{i:04x}"', ""]
    return "\n".join(lines)


@contextlib.contextmanager
def session_lock(spec: BenchLabSpec) -> Iterator[None]:
    """One benchmark run per state dir at a time (a second `up` would tear down the first)."""
    path = Path(str(spec.state_dir) + ".lock")
    with locked(path, 0, lambda: LabError(f"another benchmark run holds {path}")):
        yield


@contextlib.contextmanager
def bench_lab(spec: BenchLabSpec, log: Any = print) -> Iterator[Lab]:
    """Up with the lab's controller on `ctl` and no agents; down whatever happens."""
    spec.check()
    with session_lock(spec):
        conf_dir = Path(tempfile.mkdtemp(prefix="swarm-enroll-bench-"))
        lab = Lab(state_dir=spec.state_dir, prefix=spec.prefix)
        try:
            (conf_dir / "rules.toml").write_text(RULES)
            (conf_dir / "cluster.toml").write_text(cluster_text(spec))
            config = load_cluster(conf_dir / "cluster.toml")
            t = time.monotonic()
            lab.up(config, agents=False)
            log(f"bench lab up in {time.monotonic() - t:.1f}s ({spec.prefix}*, {spec.subnet})")
            yield lab
        finally:
            t = time.monotonic()
            try:
                lab.down()
            finally:
                shutil.rmtree(conf_dir, ignore_errors=True)
            log(f"bench lab down in {time.monotonic() - t:.1f}s")


# ---- measuring processes -----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def vm_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of /proc/<pid>/status, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Vm") or line.startswith("Rss"):
                key, _, value = line.partition(":")
                out[key] = int(value.split()[0])
    return out


def tree_vm_kb(pid: int) -> dict[str, int]:
    """vm_kb summed over `pid` and its descendants (an agent's processes, together)."""
    total: dict[str, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for key, value in vm_kb(p).items():
                total[key] = total.get(key, 0) + value
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # it ended meanwhile
    return total


def settle(pid: int, below: float = 0.05, window: float = 1.0, timeout: float = 30.0) -> float:
    """Wait until the process uses less than `below` of a core over `window`; return waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        c0 = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - c0) / window < below:
            break
    return time.monotonic() - start


def settle_host(below: float = 0.25, window: float = 1.0, timeout: float = 20.0) -> float:
    """Wait until the whole host uses less than `below` cores over `window` (what our lab or
    someone else's left running calms down); return the last reading, in cores."""
    deadline = time.monotonic() + timeout
    while True:
        b0 = sum(host_cpu_seconds())  # stolen time too: not idle for a benchmark
        time.sleep(window)
        busy = (sum(host_cpu_seconds()) - b0) / window
        if busy < below or time.monotonic() > deadline:
            return busy


def node_ready(client: docker.DockerClient, hostname: str) -> bool:
    for n in client.api.nodes(filters={"name": hostname}):
        if (n.get("Description", {}).get("Hostname", "").lower() == hostname.lower()
                and n["Status"]["State"] == "ready"):
            return True
    return False


def wait_ready(client: docker.DockerClient, hostname: str, timeout: float = 120.0,
               interval: float = 0.05) -> float:
    """Poll the manager's node list until `hostname` is Ready; return time.monotonic() then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_ready(client, hostname):
            return time.monotonic()
        time.sleep(interval)
    raise LabError(f"{hostname} not Ready in the swarm within {timeout:.0f}s")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@contextlib.contextmanager
def avahi(lab: Lab, name: str) -> Iterator[LabAvahi]:
    """A real avahi-daemon in the Pi, as Raspberry Pi OS runs one, on a bus of its own, its
    dirs the Pi's (never the host's /etc/avahi/services or system bus)."""
    daemon = LabAvahi(name, lab.netns_name(name), lab.run_base / name / "avahi")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


Reading = dict[int, tuple[str, float, int]]  # pid -> (name, CPU seconds, start time)


def processes_cpu(places: tuple[Path, ...],
                  names: dict[tuple[int, int, str], str] | None = None) -> Reading:
    """Every process on the host: pid -> (name, CPU seconds, start time). The name is the
    command and, for a lab Pi's process, the Pi (the first `<place>/<pi>/` path in its
    command line). `names` keeps each process's name by (pid, start time, command name),
    so that a sampler reads a command line once per command a process runs (an exec keeps
    the pid and start time: the load generator is nsenter, then taskset, then python;
    an exec of the same command keeps its name): it shares the storm's two cores."""
    names = {} if names is None else names
    found: Reading = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            pid, start = int(entry.name), int(fields[19])
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            name = names.get((pid, start, comm))
            if name is None:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                name = names[pid, start, comm] = _process_name(comm, argv, places)
        except OSError:
            continue  # it ended meanwhile
        found[pid] = (name, (int(fields[11]) + int(fields[12])) / _TICK, start)
    return found


def _process_name(comm: str, argv: list[bytes], places: tuple[Path, ...]) -> str:
    words = [a.decode(errors="replace") for a in argv if a]
    script = next((Path(w).stem for w in words[1:3] if w.endswith(".py")), "")
    if "-m" in words[:3]:
        script = words[words.index("-m") + 1] if len(words) > words.index("-m") + 1 else ""
    name = script if comm.startswith("python") and script else comm
    for word in words:
        for place in places:
            _, sep, tail = word.partition(f"{place}/")
            if sep and tail.split("/", 1)[0]:
                return f"{name} ({tail.split('/', 1)[0]})"
    return name


def cpu_by_process(before: Reading, since: list[Reading], seconds: float,
                   named: dict[int, str] | None = None) -> dict[str, float]:
    """Cores each process (by name; `named` pids by the given names) used from the
    `processes_cpu` reading `before` to the readings taken `since` (oldest first), busiest
    first; processes that began meanwhile count whole. A process counts what it used until
    the last reading it appears in (the storm's load generator exits before the sampler's
    last reading, and was missing from half the runs' figures)."""
    last: dict[tuple[int, int], tuple[str, float]] = {}
    for reading in since:
        for pid, (name, cpu, started) in reading.items():
            last[pid, started] = (name, cpu)
    cores: dict[str, float] = {}
    for (pid, started), (name, cpu) in last.items():
        old = before.get(pid)
        used = cpu - old[1] if old is not None and old[2] == started else cpu
        if used > 0:
            label = (named or {}).get(pid, name)
            cores[label] = cores.get(label, 0.0) + used / seconds
    return dict(sorted(cores.items(), key=lambda kv: -kv[1]))


class ProcessSampler:
    """`processes_cpu` every `every` seconds in a thread, so that the per-process figures
    cover the window in which `pid` (the controller under load) was busy, not the load
    generator's start (its keys) or its check of the grants."""

    def __init__(self, pid: int, places: tuple[Path, ...], every: float = 0.5) -> None:
        self.pid = pid
        self.places = places
        self.every = every
        self.samples: list[tuple[float, Reading]] = []
        self._names: dict[tuple[int, int, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), processes_cpu(self.places, self._names)))
            if self._stop.wait(self.every):
                self.samples.append((time.monotonic(), processes_cpu(self.places, self._names)))
                return

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy_window(self, below: float = 0.1) -> tuple[int, int]:
        """Indexes of the samples around the intervals in which `pid` used `below` cores or
        more."""
        def cpu(i: int) -> float:
            return self.samples[i][1].get(self.pid, ("", 0.0, 0))[1]
        busy = [i for i in range(1, len(self.samples))
                if cpu(i) - cpu(i - 1) >= below * (self.samples[i][0] - self.samples[i - 1][0])]
        return (busy[0] - 1, busy[-1]) if busy else (0, len(self.samples) - 1)

    def cores(self, named: dict[int, str]) -> dict[str, Any]:
        first, last = self.busy_window()
        (t0, before), t1 = self.samples[first], self.samples[last][0]
        since = [reading for _, reading in self.samples[first + 1:last + 1]]
        return {"window_s": t1 - t0,
                "cores": cpu_by_process(before, since, max(t1 - t0, 1e-9), named)}
