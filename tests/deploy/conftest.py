"""Fixtures for the lab tests: one small lab for the whole session, always torn down.

The lab uses the host-wide names (namespaces `selab-*`, veth `selab0`, 198.18.0.0/24):
running these tests replaces any lab that is up (state dir: ENROLL_LAB_DIR or the default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from deploy.lab.config import ClusterConfig, load_cluster
from deploy.lab.lab import Lab

PI_NAMES = ("PiLike-01", "PiLike-02", "PiLike-03")


def cluster_toml(names: tuple[str, ...], controller: str | None = None) -> str:
    """A small cluster file: the first Pi a Zero W, the others Pi 3s; .11, .12, ..."""
    lines = ["[lab]", 'subnet = "198.18.0.0/24"']
    if controller:
        lines += ['rules = "rules.toml"', f'controller = "{controller}"']
    for i, name in enumerate(names, start=1):
        zero = i == 1
        model = "Raspberry Pi Zero W Rev 1.1" if zero else "Raspberry Pi 3 Model B Rev 1.2"
        lines += [
            "", "[[pi]]", f'name = "{name}"', f'model = "{model}"',
            f'arch = "{"armv6l" if zero else "armv7l"}"',
            f'hardware_id = "00000000a1b2c3{i:02x}"',
        ]
        if i == len(names) and len(names) > 1:
            lines.append("token = false")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ClusterConfig]:
    """Write a cluster file (plus rules.toml) to a temp dir and load it."""
    def make(names: tuple[str, ...] = PI_NAMES, controller: str | None = None) -> ClusterConfig:
        d = tmp_path_factory.mktemp("cluster")
        (d / "rules.toml").write_text('[[rule]]\nmatch = "*"\nrole = "worker"\napprove = "token"\n')
        (d / "cluster.toml").write_text(cluster_toml(names, controller))
        return load_cluster(d / "cluster.toml")
    return make


@pytest.fixture(scope="session")
def lab(
    request: pytest.FixtureRequest, make_cluster: Callable[..., ClusterConfig]
) -> Iterator[Lab]:
    """A 3-Pi lab (daemons and images; no controller, no agents), up once per session."""
    the_lab = Lab()
    request.addfinalizer(the_lab.down)  # before up: a half-done up is torn down too
    started = time.monotonic()
    the_lab.up(make_cluster(), controller=False, agents=False)
    print(f"lab up in {time.monotonic() - started:.1f}s")
    yield the_lab


@pytest.fixture(scope="session")
def pi_names() -> tuple[str, ...]:
    return PI_NAMES


@pytest.fixture(scope="session")
def pi_ips() -> dict[str, str]:
    return {name: f"198.18.0.{11 + i}" for i, name in enumerate(PI_NAMES)}
