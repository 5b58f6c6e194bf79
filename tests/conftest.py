"""Shared test set-up: lab tests need root and the lab's tools, and fail loudly without.

`make test` installs everything the lab needs, so a missing tool is a broken set-up,
never a reason to skip: a skipped lab test would hide exactly what it is there to catch.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.lab import cards, cgroups, mounts, netns, procs
from deploy.lab.lab import Lab

pytest_plugins = ["tests.labfailures"]  # a failed lab test reports its Pis' log tails


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


@pytest.fixture(scope="session")
def lab_leftovers() -> Callable[[Lab], list[str]]:
    return leftovers


def leftovers(the_lab: Lab) -> list[str]:
    """Everything a torn-down lab must not leave behind (empty when clean): its
    namespaces, host veth, processes (daemons, agents, card Pis' nspawn and booted
    systems), mounts (card Pis' disks too), cgroups, runtime dir, state file."""
    found = [f"netns {n}" for n in netns.list_netns(the_lab.prefix)]
    if netns.link_exists(the_lab.host_if):
        found.append(f"link {the_lab.host_if}")
    paths = (str(the_lab.run_base) + "/", str(the_lab.state_dir) + "/")
    for pid in procs.pids():
        argv = procs.cmdline(pid)
        if procs.alive(pid) and argv and any(p in a for a in argv for p in paths):
            found.append(f"process {pid}: {' '.join(argv)[:100]}")
    found += [f"process {pid} in lab cgroup"
              for pid in procs.in_cgroup(the_lab.prefix, prefix=True) if procs.alive(pid)]
    found += [f"mount {m}" for m in mounts.mounts_under(the_lab.run_base, the_lab.state_dir)]
    found += [f"cgroup {c}" for c in cgroups.find(the_lab.prefix)]
    found += [f"nspawn dir {p}" for p in cards.PROPAGATE.glob(the_lab.prefix + "*")]
    if the_lab.run_base.exists():
        found.append(f"dir {the_lab.run_base}")
    if the_lab.state_file.exists():
        found.append(f"file {the_lab.state_file}")
    for d in the_lab.state_dir.glob("*/docker"):
        found.append(f"dir {d}")
    return found
