"""The Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
from controller.baseline.spec import parse_baseline
from controller.cluster import Registry
from controller.config import ControllerConfig
from controller.dockerapi import connect
from controller.enrollment import EnrollmentService
from controller.nonces import NonceStore
from controller.pki import ca_signing_key, load_ca
from controller.rules import QuorumSettings, Rule, RulesError, parse_rules, quorum_settings
from controller.shared import SharedFile
from controller.sightings import Sightings
from controller.state import State
from controller.state.sqlite import SQLiteBackend
from controller.swarm import Swarm
from controller.tokens import adoption_secret

log = logging.getLogger(__name__)


@dataclass
class ControllerState:
    """Everything a request needs, built once per app."""

    state: State
    nonces: NonceStore
    enrollment: EnrollmentService
    pin: str
    ca_pem: bytes
    config: ControllerConfig
    sightings: Sightings
    registry: Registry  # the controllers, and which of them were heard from lately
    version: str = __version__
    # The swarm's id, set by `serve` once Docker said it; /healthz tells agents its start.
    cluster_id: str = ""
    # The quorum keeper's settings, from the shared rules (None: it is off).
    quorum: Callable[[], QuorumSettings | None] = lambda: None
    # Baseline services; None without a real Docker connection (unit tests' FakeSwarm).
    baseline: Reconciler | None = None


def shared_rules(state: State, config: ControllerConfig) -> SharedFile[list[Rule]]:
    return SharedFile(state, "rules", config.rules_path,
                      lambda text, where: _rules_of(text, where),
                      lambda text, where: _rules_of(text, where, new=True))


def shared_quorum(rules: SharedFile[list[Rule]]) -> Callable[[], QuorumSettings | None]:
    """The [quorum] table of the shared rules (checked with them when they were taken)."""
    def current() -> QuorumSettings | None:
        rules.current()  # takes an edit of the local file first
        return quorum_settings(rules.text())
    return current


def _rules_of(text: str, where: str, new: bool = False) -> list[Rule]:
    try:
        return parse_rules(text, new)
    except RulesError as exc:
        raise RulesError(f"{where}: {exc}") from None


class BoundedJSONProvider(DefaultJSONProvider):
    """request.get_json() with the nesting bounded: too deep is bad JSON, not a 500."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return safejson.loads(s)


def create_app(config: ControllerConfig, swarm: Swarm | None = None,
               baseline: Reconciler | None = None, state: State | None = None,
               registry: Registry | None = None) -> Flask:
    """The controller's app. Without `state`, a SQLite file in the state dir (one
    controller alone, and the unit tests); `enroll-controller serve` passes the swarm's
    shared state, and the registry of controllers it heartbeats in."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = BoundedJSONProvider(app)
    ca_cert, _ = load_ca(config.ca_cert, config.ca_key)
    state = state or State(SQLiteBackend(config.database))
    rules = shared_rules(state, config)
    rules.current()  # a broken rules file stops the start, not the first enrollment
    registry = registry or Registry(state, config.hostname, config.url)
    service = EnrollmentService(
        state, swarm or Swarm(connect(config.docker_host)), ca_signing_key(config.ca_key),
        rules.current, grant_ttl=config.grant_ttl_minutes * 60,
        adoption_secret=adoption_secret(config.adoption_secret), limits=config.limits,
        controller_urls=registry.urls,
    )
    app.extensions["swarm_enroll"] = ControllerState(
        state, NonceStore(), service, pin_of_certificate(ca_cert), config.ca_cert.read_bytes(),
        config, Sightings(), registry, quorum=shared_quorum(rules),
    )
    errors.register(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(agent.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(baseline_api.bp)
    if baseline is None and isinstance(service.swarm, Swarm):  # reconcile over real Docker
        source = SharedFile(state, "baseline", config.baseline_path,
                            lambda text, where: parse_baseline(text, source=where))
        baseline = Reconciler(service.swarm.api, source,
                              settling=service.roles_in_flight)
    if baseline is not None:
        if baseline.audit is None:
            baseline.audit = lambda actor, action, reason: state.audit(actor, action, reason)
        app.extensions["swarm_enroll"].baseline = baseline
        # after each join; `enroll-controller serve` starts its background work
        service.membership_changed.append(baseline.on_membership_changed)
    return app
