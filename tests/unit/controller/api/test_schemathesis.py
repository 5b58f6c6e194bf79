"""Property-based: every operation of /v1/openapi.json, fed what the schema allows and
what it does not, with and without the admin token. No answer may be a 5xx, and every
answer must be what the document says (status, content type, body).

The app is built at import (schemathesis reads its schema then; its lazy, fixture-based
loading does not work with this pytest), on a temporary state dir removed at the end."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from controller.app import create_app
from controller.baseline.reconcile import Reconciler
from controller.hostglob import glob_problem

from ...helpers import Controller, build_controller
from ..baseline.fakedocker import FakeDockerAPI, node
from ..baseline.test_reconcile import BASELINE


def _full(state_dir: Path) -> Controller:
    """The app as `serve` builds it, with the baseline over an in-memory Docker: every
    endpoint has something to answer with, and a pending record to decide on."""
    controller = build_controller(state_dir)
    controller.config.baseline_path.write_text(BASELINE)
    api = FakeDockerAPI([node("mgr-1", "manager", leader=True), node("pi-1")])
    controller.state.close()
    app = create_app(controller.config, swarm=controller.swarm,
                     baseline=Reconciler(api, controller.config.baseline_path))
    app.testing = False
    full = dataclasses.replace(controller, app=app, client=app.test_client())
    full.agent("man-1").enroll()
    return full


@schemathesis.serializer("application/jose")
def _jose(_ctx: Any, value: Any) -> bytes:
    """Agent requests are a compact JWS: text, sent as it is."""
    return value.encode() if isinstance(value, str) else repr(value).encode()


# Where a request that fits the schema can still be refused, rightly: a baseline file that
# is a string but no valid file (422: the parser says), and an agent request, which must be
# a JWS signed over a fresh nonce (the other tests sign real ones), and a token's
# hostname_glob with an empty range such as [8-3] (no pattern can compare two characters).
NOT_SCHEMA_ALONE = {"/v1/baseline/apply", "/v1/enrollments", "/v1/enrollments/{node_id}/poll",
                    "/v1/enrollments/{node_id}/joined"}


def _excluded(case: Any) -> list[Any]:
    glob = case.body.get("hostname_glob") if isinstance(case.body, dict) else None
    empty_range = isinstance(glob, str) and (glob_problem(glob) or "").startswith("its range")
    refused_rightly = case.path in NOT_SCHEMA_ALONE or (case.path == "/v1/tokens"
                                                        and empty_range)
    return [positive_data_acceptance] if refused_rightly else []


_TMP = tempfile.TemporaryDirectory(prefix="swarm-enroll-schemathesis-")
FULL = _full(Path(_TMP.name) / "state")
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", FULL.app)
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    FULL.state.close()
    _TMP.cleanup()


@schema.parametrize()
@SETTINGS
def test_with_the_admin_token(case: Any) -> None:
    case.call_and_validate(headers=FULL.admin, excluded_checks=_excluded(case))


@schema.parametrize()
@SETTINGS
def test_without_a_token(case: Any) -> None:
    case.call_and_validate(excluded_checks=_excluded(case))
