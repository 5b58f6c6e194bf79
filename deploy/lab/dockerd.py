"""One dockerd per simulated Pi, inside the Pi's network and UTS namespaces.

Started as `nsenter --net=<ns file> unshare --fork --uts sh -c 'hostname <name>; exec dockerd ...'`
(not `ip netns exec`, which remounts /sys and loses the cgroup mounts). Each daemon has its
own data root, exec root, socket, pid file and cgroup parent so several run side by side;
the UTS namespace gives it the Pi's hostname, which Swarm uses as the node name.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker

from . import mounts, procs
from .netns import netns_path

DOCKERD = "dockerd"
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
_HOSTNAME_THEN_EXEC = 'hostname "$1" && shift && exec "$@"'


class DaemonError(RuntimeError):
    """A daemon failed to start or stop; the message carries the tail of its log."""


@dataclass(frozen=True)
class DaemonSpec:
    """Where one Pi's daemon keeps its things."""

    name: str  # the Pi's hostname
    netns: str
    data_root: Path  # <state>/<name>/docker
    run_dir: Path  # /run/selab/<name>: exec root, socket, pid file
    log: Path
    cgroup_parent: str

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "x"  # short: containerd's sockets live below it

    @property
    def sock(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def viz_socket_dir(self) -> Path:
        """Where this Pi's controller serves viz's filtered Docker API (not Docker's)."""
        return self.run_dir / "docker-ro"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def config_file(self) -> Path:
        return self.log.parent / "daemon.json"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.sock}"

    def command(self) -> list[str]:
        """The full argv: enter the Pi's netns, new UTS ns with its hostname, exec dockerd."""
        dockerd = [
            DOCKERD,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "-H", self.docker_host,
            "--pidfile", str(self.pidfile),
            "--cgroup-parent", self.cgroup_parent,
            "--config-file", str(self.config_file),  # not the host's /etc/docker/daemon.json
            "--shutdown-timeout", "5",
        ]
        return [
            "nsenter", f"--net={netns_path(self.netns)}",
            # --fork keeps unshare as dockerd's parent, so that a stopped dockerd is reaped
            # even where PID 1 reaps nothing (containers, CI sandboxes)
            "unshare", "--fork", "--kill-child", "--uts",
            "sh", "-c", _HOSTNAME_THEN_EXEC, "sh", self.name, *dockerd,
        ]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def client(spec: DaemonSpec, timeout: int = 60) -> docker.DockerClient:
    """A docker SDK client for this daemon (API version negotiated)."""
    return docker.DockerClient(base_url=spec.docker_host, timeout=timeout)


def spawn(spec: DaemonSpec) -> subprocess.Popen:
    """Start the daemon without waiting for it (the join benchmark times a Pi's boot)."""
    for d in (spec.data_root, spec.run_dir, spec.log.parent):
        d.mkdir(parents=True, exist_ok=True)
    spec.run_dir.chmod(0o700)
    spec.config_file.write_text(json.dumps({}) + "\n")
    with open(spec.log, "ab") as log:
        return subprocess.Popen(
            spec.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=_ENV, start_new_session=True,  # outlives `enroll-lab up`
        )


def start(spec: DaemonSpec, timeout: float = 60.0) -> int:
    """Start the daemon and wait until its socket answers; return its pid."""
    proc = spawn(spec)
    try:
        wait_ready(spec, proc, timeout)
    except BaseException:
        procs.kill([proc.pid, *filter(None, [daemon_pid(spec)])])
        raise
    return daemon_pid(spec) or proc.pid


def wait_ready(spec: DaemonSpec, proc: subprocess.Popen, timeout: float) -> None:
    """Poll the socket until ping() succeeds; fail early if the daemon exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise DaemonError(f"dockerd for {spec.name} exited with status {rc} "
                              f"(log: {spec.log})\n{log_tail(spec.log)}")
        if spec.sock.exists():
            try:
                with contextlib.closing(client(spec, timeout=5)) as c:
                    c.ping()
                return
            except Exception as exc:  # not ready yet: any transport error
                last = exc
        time.sleep(0.2)
    raise DaemonError(f"dockerd for {spec.name} did not answer on {spec.sock} within "
                      f"{timeout:.0f}s (log: {spec.log}; last error: {last})\n"
                      f"{log_tail(spec.log)}")


def start_all(specs: Iterable[DaemonSpec], timeout: float = 90.0) -> dict[str, int]:
    """Start all daemons in parallel; raise one DaemonError listing every failure."""
    specs = list(specs)
    if not specs:
        return {}
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        futures = {s.name: pool.submit(start, s, timeout) for s in specs}
    pids, errors = {}, []
    for name, fut in futures.items():
        try:
            pids[name] = fut.result()
        except Exception as exc:
            errors.append(str(exc) if isinstance(exc, DaemonError) else f"{name}: {exc}")
    if errors:
        summary = f"{len(errors)} of {len(specs)} daemons failed; first: {errors[0]}"
        raise DaemonError("\n".join([summary, *errors[1:]]))
    return pids


def daemon_pid(spec: DaemonSpec, recorded: int | None = None) -> int | None:
    """The live dockerd of this spec (pid file, else the recorded pid), checked by cmdline."""
    candidates = []
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int(spec.pidfile.read_text().strip()))
    if recorded:
        candidates.append(recorded)
    for pid in candidates:
        if procs.alive(pid) and str(spec.data_root) in procs.cmdline(pid):
            return pid
    return None


def stop(spec: DaemonSpec, recorded_pid: int | None = None, timeout: float = 20.0) -> None:
    """Stop the daemon, its containerd, shims and containers; unmount; remove its dirs.

    Safe to call when any of it is already gone.
    """
    pid = daemon_pid(spec, recorded_pid)
    if pid:
        procs.terminate([pid], timeout=timeout)
    # containerd and shims carry the exec root in their argv; containers sit in our cgroup
    leftovers = procs.with_arg_containing(f"{spec.run_dir}/") + procs.in_cgroup(spec.cgroup_parent)
    if leftovers:
        procs.terminate(leftovers, timeout=5)
    mounts.remove_tree(spec.data_root)
    mounts.remove_tree(spec.run_dir)


def stop_all(items: Iterable[tuple[DaemonSpec, int | None]], timeout: float = 20.0) -> list[str]:
    """Stop daemons in parallel; return error messages instead of raising (teardown goes on)."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = {s.name: pool.submit(stop, s, pid, timeout) for s, pid in items}
    errors = []
    for name, fut in futures.items():
        try:
            fut.result()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
    return errors
