"""A live controller for the attack tests: the real cheroot + TLS server on 127.0.0.1.

The attacks are against the server's own behaviour (slow clients, floods, races), so the
server is the real one (controller.server.make_server, the CA-issued TLS certificate, a
real SQLite file), in this process, on an ephemeral loopback port. Only Docker is replaced,
by the unit tests' FakeSwarm; nothing is bound outside loopback.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from joserfc.jwk import OKPKey
from unit.helpers import DEFAULT_RULES, Controller, FakeSwarm, build_controller

from agent.client import ControllerClient
from controller.server import make_server


@dataclass
class LiveController:
    """A controller serving HTTPS on 127.0.0.1; `state` is its app, store and FakeSwarm."""

    url: str
    ca_file: Path
    admin_token: str
    state: Controller

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("https://").rpartition(":")
        return host, int(port)

    def session(self) -> requests.Session:
        """An HTTPS session that trusts only this controller's CA (never the environment)."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_file)
        return session

    def admin(self, method: str, path: str, timeout: float = 10.0, **kwargs: Any) -> Any:
        with self.session() as session:
            return session.request(method, self.url + path, timeout=timeout, headers={
                "Authorization": f"Bearer {self.admin_token}"}, **kwargs)

    def agent(self, timeout: float = 10.0) -> ControllerClient:
        """The real agent's client, with a fresh key, trusting this controller's CA."""
        return ControllerClient(self.url, self.ca_file, OKPKey.generate_key("Ed25519"),
                                timeout=timeout)


@contextmanager
def serve_controller(state_dir: Path, rules: str = DEFAULT_RULES,
                     swarm: FakeSwarm | None = None,
                     settings: dict[str, Any] | None = None) -> Iterator[LiveController]:
    controller = build_controller(state_dir, rules, swarm, settings)
    # as `enroll-controller serve` does, from what its Docker says
    controller.app.extensions["swarm_enroll"].cluster_id = controller.swarm.local().cluster_id
    config = dataclasses.replace(controller.config, listen="127.0.0.1", port=0)
    server = make_server(controller.app, config)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="live-controller", daemon=True)
    thread.start()
    try:
        yield LiveController(f"https://127.0.0.1:{server.bind_addr[1]}", config.ca_cert,
                             controller.admin_secret, controller)
    finally:
        server.stop()
        thread.join(timeout=30)
        controller.state.close()


@pytest.fixture
def start_controller(tmp_path: Path) -> Iterator[Callable[..., LiveController]]:
    """Factory: another live controller (own state dir) per call, all stopped at the end."""
    with ExitStack() as stack:
        count = iter(range(1000))

        def start(rules: str = DEFAULT_RULES, swarm: FakeSwarm | None = None,
                  **settings: Any) -> LiveController:
            return stack.enter_context(serve_controller(tmp_path / f"live{next(count)}",
                                                        rules, swarm, settings))

        yield start


@pytest.fixture
def live_controller(start_controller: Callable[..., LiveController]) -> LiveController:
    return start_controller()
