"""Every manager runs a controller, and no worker does: the agent sees to it.

Every `interval` seconds the agent asks its own Docker daemon whether this node is a
swarm manager. When it is, the controller is started; when it is not any more, stopped
(the controller also stops by itself once it notices). A Pi promoted by the quorum keeper
or an admin thus serves within seconds, and the one demoted stops.

Two ways to run it:
- systemd (a real Pi): `systemctl start|stop enroll-controller.service`;
- a child process (the lab, and systems without systemd): `controller_command` from the
  agent config, whose output goes to `controller_log`; it is told to stop (SIGTERM) when
  the agent exits, and by the kernel if the agent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import threading
from typing import Any

from agent.swarm import DockerError, local_state

log = logging.getLogger(__name__)

CHECK_INTERVAL = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def systemctl(action: str, unit: str) -> None:
    """`systemctl --no-block ACTION UNIT`; a failure is logged (systemd retries units)."""
    try:
        done = subprocess.run(["systemctl", "--no-block", action, unit],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("systemctl %s %s: %s", action, unit, exc)
        return
    if done.returncode != 0:
        log.warning("systemctl %s %s failed: %s", action, unit, done.stderr.strip()[:200])


class ControllerSupervisor:
    def __init__(self, docker: Any, command: list[str], unit: str, log_path: str = "",
                 interval: float = CHECK_INTERVAL) -> None:
        self.docker = docker
        self.command = command
        self.unit = unit
        self.log_path = log_path
        self.interval = interval
        self.proc: subprocess.Popen[bytes] | None = None
        self._manager: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the controller runs as this process's child."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.unit)

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="controller-supervisor",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                swarm = local_state(self.docker)
                self.ensure(swarm.state == "active" and swarm.manager)
            except (DockerError, OSError) as exc:
                log.debug("cannot ask Docker whether this is a manager: %s", exc)
                wait = min(wait, 1.0)  # Docker still starting: the agent starts beside it
            except Exception:  # never let the supervisor die with the agent still running
                log.exception("controller supervisor")
            self._stop.wait(wait)

    def ensure(self, manager: bool) -> None:
        """Start the controller on a manager, stop it on a worker."""
        if manager != self._manager and (manager or self._manager is not None):
            log.info("this node is %s: %s the controller", "a manager" if manager else
                     "no manager any more", "starting" if manager else "stopping")
        previous = self._manager
        changed, self._manager = manager != previous, manager
        if self.command:
            self._process(manager)  # also brings back a controller that exited
        elif self.unit and changed and (manager or previous is not None):
            self._systemd(manager)  # systemd restarts a unit that fails by itself

    def _process(self, manager: bool) -> None:
        running = self.running
        if manager and not running:
            if self.proc is not None:
                log.warning("the controller exited (status %s); starting it again",
                            self.proc.returncode)
            out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(self.command, stdout=out, stderr=out,
                                             stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)
            finally:
                if out is not subprocess.DEVNULL:
                    out.close()
        elif not manager and running:
            self._terminate()

    def _systemd(self, manager: bool) -> None:
        systemctl("start" if manager else "stop", self.unit)

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.command:
            self._terminate()

