"""The operating system of a lab Pi booted from a card: a Debian 12 root, built once.

`debootstrap --variant=minbase` from the Debian mirror that apt on this host uses (read
from /etc/apt/sources.list*), then `apt-get install` inside it for what a Raspberry Pi OS
Lite image brings that the first boot relies on: python3 with venv, cloud-init, and
docker.io. Docker's daemon never runs in it: each Pi's daemon is the lab's own, bound in
at /var/run/docker.sock, so `docker.service` is replaced by a stand-in that waits for that
socket, and `docker.socket` and containerd are masked.

The result is cached under the lab's state dir in `rootfs.cache/<stamp>/root`, where the
stamp is a hash of everything below that shapes the root; a changed package list or
configuration builds a new one. `down` never deletes it. The build runs in a directory
next to the state dir and is renamed into place when complete, so a half-built root is
never used and a concurrent `down` never unmounts a running build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import mounts
from .locks import locked

CACHE_DIR = "rootfs.cache"  # under the state dir; not a valid Pi name (it has a dot)
SUITE = "bookworm"
# debootstrap's own resolver cannot follow virtual packages, so only the base goes there
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2")
PACKAGES = ("python3", "python3-venv", "ca-certificates", "docker.io", "cloud-init")
HOSTNAME = "raspberrypi"  # what an unconfigured Raspberry Pi OS calls itself
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BUILD_TIMEOUT = 1800

# Docker's unit on the Pi: the lab's dockerd is this Pi's daemon (bound-in socket).
DOCKER_STAND_IN = """\
# swarm-enroll lab: this Pi's Docker daemon is the lab's own dockerd, whose socket the
# lab binds in at /var/run/docker.sock. This unit stands in for dockerd: it is active
# once that daemon answers.
[Unit]
Description=Docker (the lab's dockerd of this Pi, at /var/run/docker.sock)
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'i=0; until /usr/bin/docker version >/dev/null 2>&1; do \
i=$((i+1)); [ "$i" -lt 60 ] || exit 1; sleep 1; done'

[Install]
WantedBy=multi-user.target
"""

# cloud-init as on a Raspberry Pi image (NoCloud from the boot partition), with two lab
# substitutions: the seed is the bound /boot/firmware directory (there is no block device
# whose label NoCloud could look for), and the network is the lab's (no renderer runs).
CLOUD_CFG = """\
# swarm-enroll lab: NoCloud reads the card bound at /boot/firmware.
datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
network: {config: disabled}
locale: C.UTF-8
"""

FILES = {
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n",
    "etc/machine-id": "",  # each Pi gets its own at its first boot
    "etc/resolv.conf": "",  # the Pis have no route out: no name server either
    "etc/default/locale": "LANG=C.UTF-8\n",
    "etc/systemd/system/docker.service": DOCKER_STAND_IN,
    "etc/cloud/cloud.cfg.d/90-swarm-enroll-lab.cfg": CLOUD_CFG,
}
MASKED = ("docker.socket", "containerd.service")
UNWANTED = ("multi-user.target.wants/docker.service",
            "multi-user.target.wants/containerd.service",
            "multi-user.target.wants/e2scrub_reap.service",
            "sockets.target.wants/docker.socket")
FORMAT = 1  # bump when the build steps change in a way the lists above do not show


class RootfsError(RuntimeError):
    """The root could not be built; the message says why and where the log is."""


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str


def stamp() -> str:
    """Hash of everything that shapes the root: a change means a new root."""
    spec = {"format": FORMAT, "suite": SUITE, "base": BASE_PACKAGES, "packages": PACKAGES,
            "files": FILES, "masked": MASKED, "unwanted": UNWANTED}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir(state_dir: Path) -> Path:
    return state_dir / CACHE_DIR


def cached(state_dir: Path) -> Path | None:
    """The root of the current stamp if it is built, else None."""
    base = cache_dir(state_dir) / stamp()
    return base / "root" if (base / "stamp.json").is_file() else None


def apt_sources(paths: tuple[Path, ...] | None = None) -> list[Source]:
    """The host's Debian `deb` sources for SUITE and its -updates/-security suites."""
    files: list[Path] = []
    for p in SOURCES if paths is None else paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".list", ".sources"))
        elif p.is_file():
            files.append(p)
    found: list[Source] = []
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822(text) if f.suffix == ".sources" else _one_line(text)
        for uri, suite in entries:
            if re.fullmatch(rf"{SUITE}(-updates|-security)?", suite) \
                    and Source(uri, suite) not in found:
                found.append(Source(uri, suite))
    return found


def _one_line(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # [arch=... signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            yield words[0].rstrip("/"), words[1]


def _deb822(text: str) -> Iterator[tuple[str, str]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri.rstrip("/"), suite


def ensure(state_dir: Path, log: Path | None = None) -> Path:
    """The cached root for the current stamp, building it first if needed (minutes)."""
    root = cached(state_dir)
    if root is not None:
        return root
    base = cache_dir(state_dir)
    base.mkdir(parents=True, exist_ok=True)
    with locked(base / ".lock"):
        root = cached(state_dir)  # built by someone else while we waited
        if root is None:
            root = _build(state_dir, log or base / "build.log")
    return root


def _build(state_dir: Path, log: Path) -> Path:
    _require_tools()
    sources = apt_sources()
    mirror = next((s.uri for s in sources if s.suite == SUITE), None)
    if mirror is None:
        raise RootfsError(f"no Debian '{SUITE}' source in /etc/apt/sources.list*: debootstrap "
                          "uses the mirror apt uses (add e.g. a deb.debian.org entry)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{state_dir.name}.rootfs-build-",
                                 dir=state_dir.parent))
    root = work / "root"
    try:
        with open(log, "w") as out:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                  SUITE, str(root), mirror], out, log)
            (root / "etc/apt/sources.list").write_text(
                "".join(f"deb {s.uri} {s.suite} main\n" for s in sources))
            policy = root / "usr/sbin/policy-rc.d"  # start no service in the chroot
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                   "DEBIAN_FRONTEND": "noninteractive"}
            _run(["chroot", str(root), "apt-get", "-q", "update"], out, log, env)
            _run(["chroot", str(root), "apt-get", "-q", "-y", "install",
                  "--no-install-recommends", *PACKAGES], out, log, env)
            _run(["chroot", str(root), "apt-get", "clean"], out, log, env)
            policy.unlink()
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        _configure(root)
        seconds = round(time.monotonic() - started, 1)
        (work / "stamp.json").write_text(json.dumps({
            "stamp": stamp(), "suite": SUITE, "mirror": mirror, "base": BASE_PACKAGES,
            "packages": PACKAGES, "seconds": seconds,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        final = cache_dir(state_dir) / stamp()
        shutil.rmtree(final, ignore_errors=True)
        shutil.move(str(work), final)
    finally:
        if work.exists():
            mounts.unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)
    for old in cache_dir(state_dir).iterdir():  # roots of earlier stamps
        if old.is_dir() and old.name != stamp() and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return final / "root"


def _configure(root: Path) -> None:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    dbus_id = root / "var/lib/dbus/machine-id"  # a copy of the build's id: shared by all
    dbus_id.unlink(missing_ok=True)
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    units = root / "etc/systemd/system"
    for rel in UNWANTED:
        (units / rel).unlink(missing_ok=True)
    for unit in MASKED:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")


def _run(argv: list[str], out: IO[str], log: Path, env: dict[str, str] | None = None) -> None:
    out.write(f"$ {' '.join(argv)}\n")
    out.flush()
    try:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                              timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RootfsError(f"{argv[0]} took longer than {BUILD_TIMEOUT}s (log: {log})") from None
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise RootfsError(f"{' '.join(argv[:3])} ... failed with status {proc.returncode} "
                          f"(log: {log})\n{tail}")


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise RootfsError("building the Pi's root needs root (debootstrap, chroot)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if not shutil.which("debootstrap", path=path):
        raise RootfsError("debootstrap is not installed (apt-get install debootstrap)")
