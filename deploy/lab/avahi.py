"""A real avahi-daemon in a lab Pi, as Raspberry Pi OS runs one, on a private system bus.

avahi's socket, pid file and services dir are compiled-in paths (/run/avahi-daemon,
/etc/avahi/services) that every lab Pi shares with the host; so the daemon runs in a
private mount namespace where per-Pi dirs are bound over them, and the agent or
controller of that Pi is pointed at those dirs (avahi_run_dir, avahi_services_dir) and at
the bus (DBUS_SYSTEM_BUS_ADDRESS, which avahi-browse honours). Both daemons live in the
Pi's network namespace, avahi on its `eth0` only, and under the lab's runtime dir: the
lab's teardown kills them even when this module's own stop() is never reached.

Labs run side by side (`make test` runs the bench smoke's lab beside the test lab's), so
the host's /run/avahi-daemon that lab avahis bind over is shared: each daemon leaves a
marker there, and the dir goes with the last marker.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deploy.lab import netns, procs
from deploy.lab.locks import locked

AVAHI_RUN = Path("/run/avahi-daemon")
AVAHI_SERVICES = Path("/etc/avahi/services")
MARKER = ".swarm-enroll-lab"  # `<MARKER>.<netns>` in AVAHI_RUN: a lab's, not the OS's
_LOCK = Path("/run/swarm-enroll-avahi.lock")  # labs side by side claim and release in turn

_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """[server]
host-name={host}
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no
"""


@dataclass
class LabAvahi:
    """avahi-daemon and its bus in one lab Pi (`start()`, `stop()`)."""

    pi: str
    netns: str
    base: Path  # a dir under the lab's runtime dir, e.g. /run/<lab>/<pi>/avahi
    bus_proc: subprocess.Popen | None = None
    avahi_proc: subprocess.Popen | None = None
    made_mountpoint: bool = False

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    @property
    def services_dir(self) -> Path:
        return self.base / "services"

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.base / 'bus'}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this avahi (avahi-browse, our agent)."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}

    def _in_netns(self) -> list[str]:
        return ["nsenter", f"--net={netns.netns_path(self.netns)}", "--"]

    def start(self, timeout: float = 20.0) -> None:
        for d in (self.run_dir, self.services_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in (self.base / "bus", self.run_dir / "socket", self.run_dir / "pid"):
            stale.unlink(missing_ok=True)  # of an earlier start: not ready before we are
        self.services_dir.chmod(0o755)
        (self.base / "bus.conf").write_text(_BUS_CONF.format(socket=self.base / "bus"))
        (self.base / "avahi-daemon.conf").write_text(_AVAHI_CONF.format(host=self.pi))
        self.bus_proc = self.avahi_proc = None  # an earlier start's are gone
        log = (self.base / "daemons.log").open("ab")
        try:
            self.bus_proc = subprocess.Popen(
                [*self._in_netns(), "dbus-daemon", "--nofork", "--nopidfile",
                 f"--config-file={self.base / 'bus.conf'}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            self._wait(lambda: (self.base / "bus").exists(), "its D-Bus socket", timeout)
            self.made_mountpoint = claim_mountpoint(self.netns)  # removed by stop() or down
            script = (f'mount --bind "$1" {AVAHI_RUN} && mount --bind "$2" {AVAHI_SERVICES} '
                      '&& exec avahi-daemon --no-drop-root --no-chroot -f "$3"')
            self.avahi_proc = subprocess.Popen(
                [*self._in_netns(), "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script, "avahi", str(self.run_dir), str(self.services_dir),
                 str(self.base / "avahi-daemon.conf")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus_address, "PATH": "/usr/sbin:/usr/bin:"
                     "/sbin:/bin"})
        finally:
            log.close()
        self._wait(lambda: (self.run_dir / "socket").exists(), "avahi's socket", timeout)

    def _wait(self, ready: object, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            for proc in (self.bus_proc, self.avahi_proc):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{self.pi}: a daemon exited ({proc.returncode}); see "
                                       f"{self.base / 'daemons.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.pi}: no {what} after {timeout}s")
            time.sleep(0.1)

    def browse(self, service_type: str, timeout: float = 15.0) -> str:
        """`avahi-browse -rtp <type>` in this Pi, through its avahi: the output."""
        result = subprocess.run([*self._in_netns(), "avahi-browse", "-rtp", service_type],
                                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", **self.env},
                                capture_output=True, text=True, timeout=timeout)
        return result.stdout

    def stop(self) -> None:
        """Both daemons ended (avahi first: it says goodbye), the mountpoint removed."""
        for proc in (self.avahi_proc, self.bus_proc):
            if proc is not None and proc.poll() is None:  # gone: the lab's down reaps it too
                procs.terminate([proc.pid], timeout=5)
        if self.made_mountpoint:
            release_mountpoint(self.netns)
            self.made_mountpoint = False


def lab_markers() -> list[str]:
    """The lab avahis' markers in the host's /run/avahi-daemon (their netns names)."""
    if not AVAHI_RUN.is_dir():
        return []
    return sorted(p.name.removeprefix(MARKER + ".") for p in AVAHI_RUN.iterdir()
                  if p.name.startswith(MARKER + "."))


def claim_mountpoint(owner: str) -> bool:
    """The host's /run/avahi-daemon, to bind over: made if absent, marked as used by the
    avahi in netns `owner`. False when the dir is the OS's (there, unmarked): left alone."""
    with locked(_LOCK):
        if AVAHI_RUN.exists() and not lab_markers():
            return False
        AVAHI_RUN.mkdir(mode=0o755, exist_ok=True)
        (AVAHI_RUN / f"{MARKER}.{owner}").touch()
        return True


def release_mountpoint(owner: str) -> None:
    """The marker of the avahi in netns `owner` removed, and the dir with the last one."""
    with locked(_LOCK):
        (AVAHI_RUN / f"{MARKER}.{owner}").unlink(missing_ok=True)
        if not lab_markers():
            with contextlib.suppress(OSError):
                AVAHI_RUN.rmdir()


def remove_mountpoint(owners: Iterable[str]) -> None:
    """The markers of a lab's avahis (its Pis' netns names), once its processes are dead
    (the lab's teardown calls this), and the dir with the last marker. The OS's own, and
    another lab's that is still running, are never touched."""
    for owner in set(owners) & set(lab_markers()):
        release_mountpoint(owner)
