"""The end-to-end fixture: the demo's own code path builds the reference cluster.

Real everything: one dockerd per simulated Pi in its own namespaces, mDNS across
the lab bridge, HTTPS with the pinned CA, the controller's SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    extra: list[subprocess.Popen] = field(default_factory=list)

    @property
    def status(self) -> dict[str, Any]:
        return self.lab.status()

    def agent_log(self, name: str) -> str:
        return self.lab.log_path(name, "agent").read_text(errors="replace")

    def start_agent(self, pi: str, tag: str, **settings: Any) -> tuple[subprocess.Popen, Path]:
        """Another agent inside `pi`'s namespaces with its own state dir and config."""
        base = self.lab.pi_dir(pi) / f"extra-{tag}"
        base.mkdir(parents=True, exist_ok=True)
        values = {"state_dir": str(base / "state"), "docker_host": self.lab.docker_host(pi),
                  "advertise_addr": next(n["ip"] for n in self.status["nodes"]
                                         if n["name"] == pi),
                  "poll_max_seconds": 2.0, **settings}
        conf = base / "agent.toml"
        conf.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        conf.chmod(0o600)
        log = base / "agent.log"
        proc = self.lab.popen(pi, [*self.lab.agent_cmd, "run", "--config", str(conf)], log=log)
        self.extra.append(proc)
        return proc, log

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


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
    c = Cluster(lab, config, admin_client(lab), said)
    yield c
    for proc in c.extra:
        c.stop(proc)
