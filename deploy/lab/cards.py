"""Lab Pis that boot the card `enrollctl flash` wrote, with a real systemd as PID 1.

A card Pi is a lab Pi (namespace, address and dockerd are the lab's) whose operating
system is the cached Debian root (rootfs.py) under an overlay of its own, its "disk"
(`<pi dir>/card/upper`), booted by systemd-nspawn inside the Pi's network namespace:

- the card directory is bound at /boot/firmware, where Raspberry Pi OS mounts its boot
  partition, so the first boot changes the card as it changes a real one;
- the Pi's dockerd socket is bound at /var/run/docker.sock;
- the `systemd.*` arguments of the card's cmdline.txt are given to systemd as its own
  arguments, which is where systemd reads its kernel command line in a container. That
  is the one step the lab substitutes for the firmware and the kernel. After a reboot
  (nspawn's exit status 133) the Pi boots again with cmdline.txt read afresh, so the
  first-run hook runs once, as on a Pi;
- a card without `user-data` stands for an image without cloud-init (Raspberry Pi OS
  Bookworm): cloud-init is disabled on that Pi's disk.

A small supervisor (the Pi's power supply: `python -m deploy.lab.cards SPEC`) starts
nspawn again after each reboot. It, nspawn and the booted system live in the cgroup
`<prefix><name>.card`, which is how teardown finds them even when the lab's state is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.flash import PAYLOAD_DIR
from controller.flash.bootfs import BOOT_MOUNT, FlashError, open_bootfs, split_cmdline

from . import cgroups, dockerd, mounts, procs

NSPAWN = "systemd-nspawn"
# nspawn leaves these behind when it is killed; its image locks are not needed (the lab
# boots each Pi's disk once), its propagation dirs are removed by power_off and forget
NSPAWN_ENV = {"SYSTEMD_NSPAWN_LOCK": "0"}
PROPAGATE = Path("/run/systemd/nspawn/propagate")
REBOOT_STATUS = 133  # nspawn's exit status when the booted system asked for a reboot
CGROUP_FS = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 30.0  # seconds until the container's PID 1 must be there
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CardError(RuntimeError):
    """A card cannot be booted; the message says why."""


@dataclass(frozen=True)
class Card:
    """What a flashed card says about the Pi it is for."""

    path: Path
    hostname: str
    method: str  # firstrun | cloud-init
    role: str  # agent | controller


@dataclass(frozen=True)
class CardPi:
    """Where one card Pi keeps its disk and its boot records (under its lab dir)."""

    name: str
    pi_dir: Path
    machine: str  # <prefix><name>: nspawn's name for it

    @property
    def cgroup(self) -> str:
        return f"{self.machine}.card"

    @property
    def dir(self) -> Path:
        return self.pi_dir / "card"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def spec_file(self) -> Path:
        return self.dir / "boot.json"

    @property
    def boots(self) -> Path:
        """One line per boot and per power-off: what the supervisor saw."""
        return self.dir / "boots"

    @property
    def console(self) -> Path:
        return self.pi_dir / "console.log"


def read_card(path: str | Path) -> Card:
    """The card at `path` (a boot partition written by `enrollctl flash`), or CardError."""
    try:
        boot = open_bootfs(path)
    except FlashError as exc:
        raise CardError(str(exc)) from None
    env_file = boot.path / PAYLOAD_DIR / "firstboot.env"
    try:
        text = env_file.read_text()
    except OSError:
        raise CardError(f"{boot.path} has no {PAYLOAD_DIR}/firstboot.env: write it with "
                        "'enrollctl flash' first") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("SE_"):
            words = shlex.split(value)
            values[key] = words[0] if words else ""
    if not values.get("SE_HOSTNAME"):
        raise CardError(f"{env_file} names no hostname (SE_HOSTNAME): flash the card again")
    return Card(boot.path, values["SE_HOSTNAME"], values.get("SE_METHOD", ""),
                values.get("SE_ROLE", "agent"))


def kernel_args(card: Path) -> list[str]:
    """The arguments of the card's cmdline.txt that systemd reads (systemd.*)."""
    try:
        args = split_cmdline((card / "cmdline.txt").read_text())
    except (OSError, UnicodeDecodeError, FlashError):
        return []  # a Pi with a broken cmdline.txt boots its default target
    return [a for a in args if a.startswith("systemd.")]


def nspawn_argv(spec: dict[str, Any], args: list[str]) -> list[str]:
    return [
        NSPAWN, "--quiet", f"--directory={spec['root']}", f"--machine={spec['machine']}",
        "--boot", "--register=no", "--keep-unit", "--console=read-only",
        "--link-journal=no", "--resolv-conf=off", f"--uuid={spec['machine_id']}",
        f"--network-namespace-path={spec['netns']}",
        f"--bind={spec['docker_sock']}:/var/run/docker.sock",
        f"--bind={spec['card']}:{BOOT_MOUNT}",
        *args,
    ]


def cgroup_dirs(name: str) -> list[Path]:
    """The card's cgroup in the hierarchies nspawn uses (v2, else name=systemd + unified)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS / name]
    return [CGROUP_FS / h / name for h in ("systemd", "unified") if (CGROUP_FS / h).is_dir()]


def processes(pi: CardPi) -> list[int]:
    """The supervisor, nspawn and everything in the booted system."""
    return [p for p in procs.in_cgroup(pi.cgroup) if procs.alive(p)]


def leader(pi: CardPi) -> int | None:
    """The booted system's PID 1 (as the host sees it), if it runs."""
    for pid in processes(pi):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                nspid = next((line.split()[1:] for line in fh if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
    return None


def enter_argv(pid: int) -> list[str]:
    """nsenter into every namespace of the booted system (its mounts, PIDs, hostname)."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
            "--cgroup", "--root", "--wd", "--", "env", "-i", f"PATH={_PATH}", "LANG=C.UTF-8"]


def boot(pi: CardPi, *, lower: Path, card: Path, netns: Path, docker_sock: Path,
         machine_id: str, fresh: bool) -> int:
    """Power the Pi on: its overlay disk mounted, the supervisor started; wait for PID 1.

    `fresh`: a new disk (the Pi's first power-on). Returns the supervisor's pid.
    """
    if fresh:
        for d in (pi.upper, pi.work, pi.root):
            d.mkdir(parents=True, exist_ok=True)
        if not (card / "user-data").is_file():  # an image without cloud-init
            marker = pi.upper / "etc/cloud/cloud-init.disabled"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    if not mounts.mounts_under(pi.root):
        opts = f"lowerdir={lower},upperdir={pi.upper},workdir={pi.work}"
        res = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(pi.root)],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise CardError(f"{pi.name}: mounting its disk (overlayfs) failed: "
                            f"{res.stderr.strip()}")
    spec = {"name": pi.name, "root": str(pi.root), "card": str(card), "netns": str(netns),
            "docker_sock": str(docker_sock), "machine": pi.machine, "machine_id": machine_id,
            "boots": str(pi.boots), "cgroups": [str(d) for d in cgroup_dirs(pi.cgroup)]}
    pi.spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    for d in cgroup_dirs(pi.cgroup):
        d.mkdir(parents=True, exist_ok=True)
    with open(pi.console, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.lab.cards", str(pi.spec_file)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={"PATH": _PATH, "LANG": "C.UTF-8",
                                     "PYTHONPATH": os.pathsep.join(sys.path)},
                                start_new_session=True)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while leader(pi) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            procs.kill([proc.pid, *processes(pi)])
            raise CardError(f"{pi.name} did not boot (console: {pi.console})\n"
                            f"{dockerd.log_tail(pi.console)}")
        time.sleep(0.1)
    return proc.pid


def power_off(pi: CardPi) -> list[str]:
    """Pull the plug: kill the supervisor and the booted system, unmount the disk (which
    stays). Returns what would not go (empty on success)."""
    victims = processes(pi)
    procs.kill(victims)
    errors = []
    still = [p for p in victims if procs.alive(p)]
    if still:
        errors.append(f"processes would not die: {still}")
    left = mounts.unmount_under(pi.root)
    if left:
        errors.append(f"still mounted: {', '.join(left)}")
    busy = cgroups.remove(pi.cgroup)
    if busy:
        errors.append(f"cgroups still in use: {busy}")
    forget(pi.machine, prefix=False)
    if victims:
        _record(pi.boots, "power cut")
    return errors


def forget(machine: str, prefix: bool = True) -> None:
    """Remove nspawn's (empty) propagation dir of that machine, or with `prefix`, of every
    machine whose name starts so (teardown without the lab's state)."""
    try:
        names = [p for p in PROPAGATE.iterdir()
                 if (p.name.startswith(machine) if prefix else p.name == machine)]
    except OSError:
        return
    for path in names:
        with contextlib.suppress(OSError):
            path.rmdir()


def boot_count(pi: CardPi) -> int:
    """How many times the Pi has started to boot."""
    try:
        return sum(" boot: " in line for line in pi.boots.read_text().splitlines())
    except OSError:
        return 0


def _record(path: Path, what: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {what}\n")


def supervise(spec_file: Path) -> int:
    """The Pi's power supply: boot, and boot again after each reboot; return nspawn's
    last exit status (a power-off inside the Pi ends it)."""
    spec = json.loads(spec_file.read_text())
    for d in spec["cgroups"]:  # first: whatever runs below must be findable by teardown
        (Path(d) / "cgroup.procs").write_text(str(os.getpid()))
    boots = Path(spec["boots"])
    while True:
        args = kernel_args(Path(spec["card"]))
        _record(boots, f"boot: {' '.join(args) or '(no systemd.* arguments)'}")
        sys.stdout.flush()
        status = subprocess.call(nspawn_argv(spec, args), stdin=subprocess.DEVNULL,
                                 env={**os.environ, **NSPAWN_ENV})
        forget(spec["machine"], prefix=False)
        _record(boots, f"nspawn exited with status {status}")
        if status != REBOOT_STATUS:
            return status


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1])))
