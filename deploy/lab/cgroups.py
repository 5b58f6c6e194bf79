"""Removing the cgroups the lab's daemons created with `--cgroup-parent <prefix><name>`.

dockerd creates them on demand (relative to its own cgroup, in every hierarchy) and never
removes them; empty ones are harmless but a clean host is the promise of `down`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def find(prefix: str, max_depth: int = 4) -> list[Path]:
    """Cgroup directories whose name starts with `prefix`, at most `max_depth` levels down."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            if e.name.startswith(prefix):
                found.append(Path(e.path))
            elif depth < max_depth:
                walk(Path(e.path), depth + 1)

    walk(CGROUP_ROOT, 0)
    return found


def remove(prefix: str) -> list[str]:
    """rmdir the matching cgroups bottom-up; return those that are still in use."""
    left = []
    for top in find(prefix):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if top.exists():
            left.append(str(top))
    return left
