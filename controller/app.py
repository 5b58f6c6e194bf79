"""The Flask application factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from agent import __version__
from agent.wire import safejson
from agent.wire.keys import pin_of_certificate
from agent.wire.messages import MAX_BODY_BYTES
from controller.api import admin, agent, errors, meta
from controller.api import baseline as baseline_api
from controller.baseline.reconcile import Reconciler
from controller.config import ControllerConfig
from controller.enrollment import EnrollmentService
from controller.nonces import NonceStore
from controller.pki import ca_signing_key, load_ca
from controller.rules import Rule, load_rules
from controller.store import Store
from controller.swarm import Swarm, connect

log = logging.getLogger(__name__)


@dataclass
class ControllerState:
    """Everything a request needs, built once per app."""

    store: Store
    nonces: NonceStore
    enrollment: EnrollmentService
    pin: str
    ca_pem: bytes
    config: ControllerConfig
    version: str = __version__
    # The swarm's id, set by `serve` once Docker said it; /healthz tells agents its start.
    cluster_id: str = ""
    # Baseline services; None without a real Docker connection (unit tests' FakeSwarm).
    baseline: Reconciler | None = None


class RulesFile:
    """Rules re-read when the file changes, so an edit needs no restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._rules: list[Rule] = []

    def __call__(self) -> list[Rule]:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._rules = load_rules(self.path)
            self._mtime = mtime
            log.info("loaded %d hostname rules from %s", len(self._rules), self.path)
        return self._rules


class BoundedJSONProvider(DefaultJSONProvider):
    """request.get_json() with the nesting bounded: too deep is bad JSON, not a 500."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return safejson.loads(s)


def create_app(config: ControllerConfig, swarm: Swarm | None = None,
               baseline: Reconciler | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = BoundedJSONProvider(app)
    ca_cert, _ = load_ca(config.ca_cert, config.ca_key)
    store = Store(config.database)
    rules = RulesFile(config.rules_path)
    rules()  # a broken rules file stops the start, not the first enrollment
    service = EnrollmentService(
        store, swarm or Swarm(connect(config.docker_host)), ca_signing_key(config.ca_key),
        rules, grant_ttl=config.grant_ttl_minutes * 60,
        local_addresses=frozenset({config.advertise_addr}),
    )
    app.extensions["swarm_enroll"] = ControllerState(
        store, NonceStore(), service, pin_of_certificate(ca_cert), config.ca_cert.read_bytes(),
        config,
    )
    errors.register(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(agent.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(baseline_api.bp)
    if baseline is None and swarm is None:  # the real thing: reconcile over our Docker API
        baseline = Reconciler(service.swarm.client.api, config.baseline_path)
    if baseline is not None:
        if baseline.audit is None:
            baseline.audit = lambda actor, action, reason: store.audit(actor, action, None,
                                                                       reason)
        app.extensions["swarm_enroll"].baseline = baseline
        # after each join; `enroll-controller serve` starts its background work
        service.membership_changed.append(baseline.on_membership_changed)
    return app
