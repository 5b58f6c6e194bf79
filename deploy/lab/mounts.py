"""Unmounting what the lab's daemons left under their directories.

The daemons share the host's mount namespace (a separate one would hide their mounts
from the `ip netns` files and from nsenter), so their overlay, nsfs and bind mounts stay
on the host until someone unmounts them; rmtree over a live mount would delete its
contents, so this runs before any directory is removed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(*roots: str | Path) -> list[str]:
    """Mount points at or below any of `roots`, in mount order (from /proc/self/mountinfo)."""
    prefixes = [str(Path(r)).rstrip("/") for r in roots]
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return found


def unmount_under(*roots: str | Path, passes: int = 5) -> list[str]:
    """Unmount everything below `roots`, deepest first, lazily as a last resort.

    Returns the mount points still present afterwards (empty on success).
    """
    for attempt in range(passes):
        points = mounts_under(*roots)
        if not points:
            return []
        # deepest first; among equals, the most recent mount first
        order = sorted(enumerate(points), key=lambda t: (t[1].count("/"), t[0]), reverse=True)
        lazy = attempt >= 1
        for _, point in order:
            res = subprocess.run(["umount", point], capture_output=True, timeout=30)
            if res.returncode != 0 and lazy:
                subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    return mounts_under(*roots)


def remove_tree(path: str | Path) -> None:
    """Unmount everything under `path`, then delete it; refuse while anything stays mounted."""
    path = Path(path)
    left = unmount_under(path)
    if left:
        raise RuntimeError(f"still mounted under {path}: {', '.join(left[:5])}")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # e.g. immutable files; one more attempt reports the reason
        shutil.rmtree(path)
