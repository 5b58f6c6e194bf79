"""Meta endpoints, and the API description kept equal to the real routes."""

from __future__ import annotations

import re

from cryptography import x509

from agent.wire.keys import pin_of_certificate
from controller.openapi import PATHS

from ...helpers import Controller

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _routes(controller: Controller) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in controller.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - IGNORED_METHODS)
    return routes


def _documented(paths: dict) -> dict[str, set[str]]:
    return {path: {m for m in ops if m.upper() not in IGNORED_METHODS}
            for path, ops in paths.items()}


def test_openapi_matches_routes(controller: Controller) -> None:
    response = controller.client.get("/v1/openapi.json")
    assert response.status_code == 200
    served = response.get_json()
    assert served["openapi"].startswith("3.")
    assert _documented(served["paths"]) == _routes(controller)
    assert _documented(PATHS) == _routes(controller)


def test_every_v1_route_is_documented(controller: Controller) -> None:
    v1 = {p for p in _routes(controller) if p.startswith("/v1/")}
    assert v1 and v1 <= set(PATHS)


def test_admin_routes_documented_as_secured(controller: Controller) -> None:
    for rule in controller.app.url_map.iter_rules():
        if rule.endpoint.startswith("admin."):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for method in rule.methods - IGNORED_METHODS:
                assert PATHS[path][method.lower()].get("security"), (method, path)


def test_healthz_reports_pin(controller: Controller) -> None:
    body = controller.client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["ca"] == controller.ca.pin


def test_healthz_reports_the_swarm_once_serve_knows_it(controller: Controller) -> None:
    assert "cluster" not in controller.client.get("/healthz").get_json()
    controller.app.extensions["swarm_enroll"].cluster_id = "k8x2m4p9q7w3abcdefghijklm"
    assert controller.client.get("/healthz").get_json()["cluster"] == "k8x2m4p9q7w3"


def test_ca_endpoint_serves_the_pinned_ca(controller: Controller) -> None:
    response = controller.client.get("/v1/ca")
    assert response.status_code == 200
    cert = x509.load_pem_x509_certificate(response.data)
    assert pin_of_certificate(cert) == controller.ca.pin
    assert b"PRIVATE" not in response.data
