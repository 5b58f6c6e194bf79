"""The end-to-end fixture: the demo's own code path builds the reference cluster.

Real everything: one dockerd per simulated Pi in its own namespaces, mDNS across
the lab bridge, HTTPS with the pinned CA, the controller's SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.adminclient import AdminClient
from deploy.lab.config import ClusterConfig, load_cluster
from deploy.lab.demo import admin_client, run_demo, wait_for
from deploy.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
DEMO_CLUSTER = REPO / "deploy" / "lab" / "cluster.toml"


@dataclass
class Cluster:
    lab: Lab
    config: ClusterConfig
    admin: AdminClient
    said: list[str]

    @property
    def status(self) -> dict[str, Any]:
        return self.lab.status()

    def agent_log(self, name: str) -> str:
        return self.lab.log_path(name, "agent").read_text(errors="replace")

    def add_pi(self, name: str, token: str | None = None, **kwargs: Any) -> Path:
        """A freshly flashed Pi with a quick-polling agent; returns its agent log."""
        settings = {"poll_max_seconds": 2.0, "idle_poll_seconds": 3.0,
                    **kwargs.pop("agent_settings", {})}
        self.lab.add_pi(name, token=token, agent_settings=settings, **kwargs)
        return self.lab.log_path(name, "agent")


def wait_log(path: Path, text: str, timeout: float = 60) -> str:
    def check() -> str:
        content = path.read_text(errors="replace") if path.exists() else ""
        return content if text in content else ""
    return wait_for(f"{text!r} in {path}", check, timeout, interval=0.3)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    lab = Lab()
    request.addfinalizer(lab.down)
    config = load_cluster(DEMO_CLUSTER)
    said: list[str] = []
    run_demo(lab, config, say=said.append)
    yield Cluster(lab, config, admin_client(lab), said)
