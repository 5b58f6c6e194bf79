"""Test helpers shared by the unit tests (no fixtures here: see conftest.py).

FakeSwarm replaces Docker for the API tests; the journeys against a real dockerd
are the lab tests' job (tests/deploy).
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import ECKey, OKPKey

from agent.wire.jws import sign_request
from agent.wire.keys import ca_public_key, pin_of_certificate, thumbprint
from controller import pki, tokens
from controller.app import create_app
from controller.config import ControllerConfig, parse_config
from controller.state import State
from controller.state.sqlite import SQLiteBackend
from controller.swarm import JoinFacts, LocalNode, SwarmError

# Hostname rules used by the API tests; there is deliberately no catch-all rule, so
# a hostname such as "other-1" matches nothing.
DEFAULT_RULES = """\
[[rule]]
match = "mgr-*"
role = "manager"
approve = "manual"
labels = { "pi.model" = "3b", "zone" = "rack-1" }
availability = "drain"

[[rule]]
match = "tok-*"
role = "worker"
approve = "token"
labels = { "zone" = "lab" }
availability = "pause"

[[rule]]
match = "tmgr-*"
role = "manager"
approve = "token"
labels = { "pi.model" = "4b" }
availability = "drain"

[[rule]]
match = "man-*"
role = "worker"
approve = "manual"
"""


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def swarm_node_id() -> str:
    """A random 25-character Swarm node ID, as `docker swarm join` prints."""
    return _alnum(25)


class FakeSwarm:
    """In-memory stand-in for controller.swarm.Swarm, for the unit tests only.

    It implements, as plain in-memory logic, exactly the methods EnrollmentService
    uses: local(), worker_token(), manager_addresses(), join_facts(), wait_ready(),
    finish_join(), node(), nodes(), nodes_named(), and the removal steps (remove,
    drain, services_on, tasks_moved, rotate_worker_token, check_can_remove_manager).
    It never talks to Docker: the journeys with a real dockerd (join, Ready, labels,
    promotion, replacement, revocation) are tested in the lab tests (tests/e2e).
    A test "joins" a Pi by calling add_member(), as `docker swarm join` would.
    """

    def __init__(self) -> None:
        # Shaped like a real token: SWMTKN-1-<50 base36>-<25 base36>.
        self.worker = f"SWMTKN-1-{_alnum(50)}-{_alnum(25)}"
        self.manager_join_token = f"SWMTKN-1-{_alnum(50)}-{_alnum(25)}"
        self.local_node = LocalNode(swarm_node_id(), "ctl-1", _alnum(25), "10.0.0.1")
        self.members: dict[str, dict[str, Any]] = {
            self.local_node.node_id: self._attrs(self.local_node.hostname, "ready", "manager"),
        }
        self.finished: list[tuple[str, str, dict[str, str], str]] = []
        self.removed: list[str] = []
        self.rotations = 0
        self.fail_local: SwarmError | None = None

    @staticmethod
    def _attrs(hostname: str, state: str, role: str) -> dict[str, Any]:
        return {"Description": {"Hostname": hostname}, "Status": {"State": state},
                "Spec": {"Role": role, "Labels": {}, "Availability": "active"},
                "UpdatedAt": "2000-01-01T00:00:00.000000000Z"}

    def add_member(self, node_id: str, hostname: str, state: str = "ready") -> None:
        self.members[node_id] = self._attrs(hostname, state, "worker")
        self.members[node_id]["ID"] = node_id

    def nodes(self) -> list[dict[str, Any]]:
        return [{**a, "ID": i} for i, a in self.members.items()]

    def nodes_named(self, hostname: str) -> list[dict[str, Any]]:
        return [a for a in self.nodes()
                if a["Description"]["Hostname"].lower() == hostname.lower()]

    def check_can_remove_manager(self) -> None:
        """Always fine here: the quorum arithmetic is tested with a real swarm."""

    def remove(self, attrs: dict[str, Any], force: bool = True) -> None:
        self.members.pop(attrs["ID"], None)
        self.removed.append(attrs["ID"])

    def drain(self, node_id: str) -> None:
        self.members[node_id]["Spec"]["Availability"] = "drain"

    def services_on(self, node_id: str) -> set[str]:
        return set()

    def tasks_moved(self, node_id: str, services: set[str]) -> bool:
        return True

    def rotate_worker_token(self) -> None:
        self.rotations += 1
        self.worker = f"SWMTKN-1-{_alnum(50)}-{_alnum(25)}"

    def local(self) -> LocalNode:
        if self.fail_local is not None:
            raise self.fail_local
        return self.local_node

    def worker_token(self) -> str:
        return self.worker

    def manager_token(self) -> str:
        return self.manager_join_token

    def join_facts(self) -> JoinFacts:
        local = self.local()
        return JoinFacts(local.cluster_id, self.worker, self.manager_addresses())

    def manager_addresses(self) -> list[str]:
        return [f"{self.local_node.addr}:2377"]

    def node(self, node_id: str) -> dict[str, Any] | None:
        return self.members.get(node_id)

    def wait_ready(self, node_id: str, hostname: str, timeout: float = 20.0) -> dict[str, Any]:
        attrs = self.node(node_id)
        if attrs is None:
            raise SwarmError("node_not_in_swarm", f"node {node_id} is not a member of this swarm")
        name = attrs["Description"]["Hostname"]
        if name.lower() != hostname.lower():
            raise SwarmError("hostname_mismatch",
                             f"swarm node {node_id} is named {name!r}, not {hostname!r}")
        if attrs["Status"]["State"] != "ready":
            raise SwarmError("node_not_ready", f"node {node_id} is not Ready yet; retry")
        return attrs

    def finish_join(self, node_id: str, role: str, labels: dict[str, str],
                    availability: str) -> None:
        self.finished.append((node_id, role, dict(labels), availability))
        spec = self.members[node_id]["Spec"]
        spec.update(Role=role, Availability=availability, Labels={**spec["Labels"], **labels})


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(header: dict[str, Any], payload: bytes | str, signature: bytes) -> str:
    """A hand-made compact JWS, for tokens the library would refuse to produce."""
    return ".".join([b64url(json.dumps(header)), b64url(payload), b64url(signature)])


def ed25519_compact(key: OKPKey, header: dict[str, Any], payload: bytes | str) -> str:
    """A compact JWS with an arbitrary protected header, really signed by `key` (Ed25519)."""
    signing_input = f"{b64url(json.dumps(header))}.{b64url(payload)}".encode()
    return f"{signing_input.decode()}.{b64url(key.private_key.sign(signing_input))}"


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    signing_key: ECKey  # private, as the controller signs grants
    public_key: ECKey  # public, as the agent verifies grants
    pin: str
    cert_path: Path
    key_path: Path


def make_ca(directory: Path) -> CA:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert = pki.create_ca(cert_path, key_path, "unit")
    _, key = pki.load_ca(cert_path, key_path)
    return CA(cert, key, pki.ca_signing_key(key_path), ca_public_key(cert_path.read_bytes()),
              pin_of_certificate(cert), cert_path, key_path)


@dataclass
class FakeAgent:
    """A Pi's agent as the controller sees it: a key, a hardware id, a hostname."""

    client: FlaskClient
    hostname: str
    hardware_id: str
    key: OKPKey = field(default_factory=lambda: OKPKey.generate_key("Ed25519"))
    source: str = "10.0.0.21"  # the address its requests come from

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.key)

    def nonce(self) -> str:
        response = self.client.head("/v1/nonce")
        nonce = response.headers.get("Replay-Nonce", "")
        assert nonce, "HEAD /v1/nonce gave no Replay-Nonce"
        return nonce

    def post_raw(self, path: str, body: str | bytes) -> Any:
        return self.client.post(path, data=body, content_type="application/jose",
                                environ_base={"REMOTE_ADDR": self.source})

    def post(self, path: str, payload: Any, nonce: str | None = None) -> Any:
        body = sign_request(self.key, payload, nonce or self.nonce(), path)
        return self.post_raw(path, body)

    def request_payload(self, **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "hostname": self.hostname, "hardware_id": self.hardware_id, "arch": "armv7l",
            "model": "Raspberry Pi 3 Model B Rev 1.2", "addresses": ["10.0.0.21"],
            "docker_version": "27.3.1", "agent_version": "0.1.0",
        }
        payload.update(fields)
        return payload

    def enroll(self, **fields: Any) -> Any:
        return self.post("/v1/enrollments", self.request_payload(**fields))

    def poll(self, enrollment_id: str) -> Any:
        return self.post(f"/v1/enrollments/{enrollment_id}/poll", {})

    def joined(self, enrollment_id: str, node_id: str) -> Any:
        return self.post(f"/v1/enrollments/{enrollment_id}/joined", {"node_id": node_id})


@dataclass
class Controller:
    """A controller app on a temp state dir, with its admin token and its FakeSwarm."""

    app: Flask
    client: FlaskClient
    swarm: FakeSwarm
    config: ControllerConfig
    ca: CA
    admin_secret: str

    @property
    def state(self) -> State:
        return self.app.extensions["swarm_enroll"].state

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_secret}"}

    def agent(self, hostname: str, hardware_id: str | None = None,
              key: OKPKey | None = None, source: str = "10.0.0.21") -> FakeAgent:
        agent = FakeAgent(self.client, hostname, hardware_id or f"00000000{_alnum(8)}",
                          source=source)
        if key is not None:
            agent.key = key
        return agent

    def admin_get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.admin, **kwargs)

    def admin_post(self, path: str, body: Any = None) -> Any:
        return self.client.post(path, headers=self.admin, json=body)

    def create_token(self, **body: Any) -> dict[str, Any]:
        response = self.admin_post("/v1/tokens", {"ttl_seconds": 3600, "uses": 1, **body})
        assert response.status_code == 201, response.get_json()
        return response.get_json()


def build_controller(state_dir: Path, rules: str = DEFAULT_RULES,
                     swarm: FakeSwarm | None = None,
                     settings: dict[str, Any] | None = None) -> Controller:
    state_dir.mkdir(parents=True, exist_ok=True)
    config = parse_config(state_dir, {"advertise_addr": "10.0.0.1", "hostname": "ctl-1",
                                      "mdns": False, **(settings or {})})
    ca_cert = pki.create_ca(config.ca_cert, config.ca_key, "unit")
    _, ca_key = pki.load_ca(config.ca_cert, config.ca_key)
    pki.issue_tls_cert(ca_cert, ca_key, config.tls_cert, config.tls_key, config.hostname,
                       [config.advertise_addr])
    admin_secret = tokens.new_secret(tokens.ADMIN_PREFIX)
    state = State(SQLiteBackend(config.database))
    state.add_admin("alice", tokens.digest(admin_secret))
    state.close()
    config.rules_path.write_text(rules)
    swarm = swarm or FakeSwarm()
    app = create_app(config, swarm=swarm)
    app.testing = False  # answer errors as production does, never re-raise
    ca = CA(ca_cert, ca_key, pki.ca_signing_key(config.ca_key),
            ca_public_key(config.ca_cert.read_bytes()), pin_of_certificate(ca_cert),
            config.ca_cert, config.ca_key)
    return Controller(app, app.test_client(), swarm, config, ca, admin_secret)


class FakeClock:
    """Stands in for the `time` module of one controller module (monkeypatch it in)."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_record(hostname: str = "pi-1", **changes: Any) -> Any:
    """A pending record, as EnrollmentService would create it."""
    from controller.state import Record, new_id

    fields: dict[str, Any] = {
        "id": new_id("enr"), "hostname": hostname, "hardware_id": f"hw-{_alnum(6)}",
        "thumbprint": thumbprint(OKPKey.generate_key("Ed25519")), "public_jwk": "{}",
        "state": "pending", "role": "worker",
    }
    fields.update(changes)
    return Record(**fields)
