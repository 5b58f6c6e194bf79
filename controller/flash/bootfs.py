"""The boot partition: recognise it, pick the first-boot method, edit its files safely.

A Raspberry Pi boot partition (`bootfs` on Raspberry Pi OS, `system-boot` on Ubuntu) is a
small FAT file system with `config.txt` and `cmdline.txt` at its top. `cmdline.txt` is one
line of kernel arguments: the firmware reads only that line, so it must stay one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from controller.flash import PAYLOAD_DIR

BOOT_MARKERS = ("cmdline.txt", "config.txt")
BACKUP_SUFFIX = ".swarm-enroll-orig"
METHODS = ("auto", "cloud-init", "firstrun")

# Where the first-boot script is on a running Pi (Raspberry Pi OS Bookworm and later, and
# Ubuntu, mount the boot partition at /boot/firmware).
BOOT_MOUNT = "/boot/firmware"
FIRSTBOOT_ON_PI = f"{BOOT_MOUNT}/{PAYLOAD_DIR}/firstboot.sh"
# The hook Raspberry Pi Imager used for Bookworm images: run one command instead of the
# default target, then reboot.
HOOK_ARGS = (
    f"systemd.run={FIRSTBOOT_ON_PI}",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
)
_RUN_COMPANIONS = re.compile(
    r"^(systemd\.run_success_action=|systemd\.run_failure_action=|"
    r"systemd\.unit=kernel-command-line\.target$|systemd\.wants=kernel-command-line\.target$)"
)
REGDOM_ARG = "cfg80211.ieee80211_regdom="


class FlashError(ValueError):
    """Bad input or a card that cannot be flashed; one line saying what to fix."""


@dataclass(frozen=True)
class BootFS:
    path: Path

    @property
    def has_cloud_init(self) -> bool:
        """cloud-init images (Raspberry Pi OS since trixie, Ubuntu) ship a user-data file."""
        return (self.path / "user-data").is_file()

    def method(self, wanted: str) -> str:
        if wanted not in METHODS:
            raise FlashError(f"--method must be one of {', '.join(METHODS)}, not {wanted!r}")
        if wanted != "auto":
            return wanted
        return "cloud-init" if self.has_cloud_init else "firstrun"


def open_bootfs(path: str | os.PathLike[str]) -> BootFS:
    """The boot partition mounted at `path`, or FlashError saying why it is not one."""
    p = Path(path)
    if not p.exists():
        raise FlashError(f"{p}: no such directory (give the mounted boot partition of the "
                         "card, e.g. /media/$USER/bootfs)")
    if not p.is_dir():
        raise FlashError(f"{p} is not a directory (give the mounted boot partition, not the "
                         "device: mount /dev/sdX1 first)")
    missing = [m for m in BOOT_MARKERS if not (p / m).is_file()]
    if missing:
        raise FlashError(f"{p} is not a Raspberry Pi boot partition: it has no "
                         f"{' and no '.join(missing)} (mount the card's first, FAT partition: "
                         "'bootfs' or 'system-boot')")
    refuse_symlinks(p.resolve())
    if not os.access(p, os.W_OK):
        raise FlashError(f"{p} is not writable (mounted read-only, or owned by another user)")
    return BootFS(p.resolve())


def find_symlinks(root: Path, most: int = 3) -> list[str]:
    """Up to `most` symbolic links under `root`, which are listed, never followed."""
    found: list[str] = []
    for top, dirs, files in os.walk(root):  # a linked directory is in `dirs`, not entered
        for name in sorted([*dirs, *files]):
            if os.path.islink(os.path.join(top, name)):
                found.append(os.path.relpath(os.path.join(top, name), root))
                if len(found) == most:
                    return found
    return found


def refuse_symlinks(root: Path) -> None:
    """A boot partition is FAT, which has no symlinks: a tree with some is a wrong path.

    Flash would otherwise read through them (user-data, backups) and write through them
    (the payload, the token) to wherever they point, outside the card.
    """
    links = find_symlinks(root)
    if links:
        raise FlashError(f"{root} holds symbolic links ({', '.join(links)}): a Pi's boot "
                         "partition (FAT) has none, so this is not one; check the path "
                         "(nothing was written)")


# ---- cmdline.txt ---------------------------------------------------------------------

def split_cmdline(text: str) -> list[str]:
    """The kernel arguments of cmdline.txt; refuses a file that is not one line.

    Double quotes group a value with spaces (`dyndbg="file x +p"`), as the kernel reads it.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise FlashError(f"cmdline.txt must hold exactly one line of kernel arguments; it has "
                         f"{len(lines)} (fix the card's cmdline.txt first)")
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in lines[0].strip():
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                args.append("".join(current))
                current = []
            continue
        current.append(ch)
    if quoted:
        raise FlashError("cmdline.txt has an unbalanced double quote (fix the card's "
                         "cmdline.txt first)")
    if current:
        args.append("".join(current))
    return args


@dataclass(frozen=True)
class CmdlineEdit:
    text: str
    foreign_run: str | None  # a systemd.run= command of someone else that we took over


def edit_cmdline(text: str, *, hook: bool, regdom: str | None) -> CmdlineEdit:
    """cmdline.txt with our first-boot hook (or without it) and the Wi-Fi country.

    Every argument we do not own stays, in its order. Our own arguments are removed before
    they are added again, so running this twice gives the same line. With `hook`, another
    `systemd.run=` (Raspberry Pi Imager's `/boot/firstrun.sh`) is taken out and returned:
    the first-boot script runs it first, since the kernel runs only one such command.
    """
    args = split_cmdline(text)
    if HOOK_ARGS[0] in args:  # the companions are Imager's too: only ours go with ours
        args = [a for a in args if a not in HOOK_ARGS]
    foreign = None
    if hook:
        runs = [a for a in args if a.startswith("systemd.run=")]
        if len(runs) > 1:
            raise FlashError("cmdline.txt has several systemd.run= arguments; remove all but "
                             "one first")
        if runs:
            foreign = runs[0].removeprefix("systemd.run=")
            args = [a for a in args if a != runs[0] and not _RUN_COMPANIONS.match(a)]
    if regdom:
        args = [a for a in args if not a.startswith(REGDOM_ARG)]
        args.append(REGDOM_ARG + regdom)
    if hook:
        args.extend(HOOK_ARGS)  # last: Imager-style scripts cut " systemd.run.*" to the end
    newline = "\n" if text.endswith("\n") else ""
    return CmdlineEdit(" ".join(args) + newline, foreign)


# ---- writing --------------------------------------------------------------------------

def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def backup_once(path: Path) -> None:
    """Keep the card's original `path` as <name>.swarm-enroll-orig, the first time only."""
    backup = backup_path(path)
    if path.is_file() and not backup.exists():
        atomic_write(backup, read_card(path))


def read_card(path: Path) -> bytes:
    """A file of the card, never through a symlink (O_NOFOLLOW: ELOOP instead)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write through a temporary file and a rename: a pulled card has the old or the new."""
    _atomic(path, mode, lambda fh: fh.write(data))


def atomic_copy(source: Path, path: Path, mode: int = 0o644) -> None:
    with open(source, "rb") as src:
        _atomic(path, mode, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))


def _atomic(path: Path, mode: int, fill: Callable[[BinaryIO], object]) -> None:
    """`path` replaced by a new file that `fill` writes; a temporary made here, and only here.

    O_EXCL | O_NOFOLLOW: the temporary is a new file of ours, never an existing file or
    the target of a link; on any failure it is removed. The rename replaces `path` itself,
    even if it were a link.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.swarm-enroll-tmp")
    tmp.unlink(missing_ok=True)  # left by an interrupted run (a link goes, not its target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
            with contextlib.suppress(PermissionError):  # FAT of another user: no modes
                os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync(path: Path) -> None:
    """Flush the card's file system, so that pulling it right after is safe."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.sync()
