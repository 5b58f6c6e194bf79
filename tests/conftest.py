"""Shared test set-up: lab tests need root and the lab's tools, and fail loudly without.

`make test` installs everything the lab needs, so a missing tool is a broken set-up,
never a reason to skip: a skipped lab test would hide exactly what it is there to catch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("dockerd", "containerd", "nsenter", "unshare", "ip"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return f"{tool} not installed"
    if not Path("/usr/bin/busybox").is_file():
        return "busybox-static not installed"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lab") and (reason := lab_unavailable()):
        pytest.fail(f"lab test cannot run: {reason} (run it as root through 'make test', "
                    "which installs what the lab needs)", pytrace=False)
