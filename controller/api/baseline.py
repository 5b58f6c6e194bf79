"""Admin endpoints for the baseline services and cluster health (with the quorum keeper).
Bearer auth, as admin.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify

from agent.wire.errors import WireError
from controller.api import admin
from controller.baseline.health import read_cluster
from controller.baseline.reconcile import Reconciler
from controller.baseline.spec import BaselineError
from controller.cluster import LEASE_KEY
from controller.keeper import STATUS_KEY, describe

bp = Blueprint("baseline", __name__, url_prefix="/v1")
# The admin blueprint's own checks, not a copy: one place decides who is an admin.
bp.before_request(admin.authenticate)
bp.after_request(admin.no_store)

T = TypeVar("T")


class BaselineInvalid(WireError):
    """422 naming the service and key at fault, as well as the message."""

    def __init__(self, exc: BaselineError) -> None:
        super().__init__("baseline_invalid", f"{exc}; nothing was changed", 422,
                         exc.to_json())


def _reconciler() -> Reconciler:
    reconciler = current_app.extensions["swarm_enroll"].baseline
    if reconciler is None:
        raise WireError("baseline_unavailable", "this controller has no Docker connection for "
                        "baseline services", 503)
    return reconciler


def _docker(call: Callable[[], T]) -> T:
    try:
        return call()
    except WireError:
        raise
    except Exception as exc:  # the local manager's Docker API is down or not a manager
        raise WireError("swarm_unavailable", f"cannot read the swarm through the local "
                        f"Docker API: {type(exc).__name__}", 503) from None


def _body() -> dict[str, Any]:
    data = admin.json_body(frozenset({"force", "file"}))
    if not isinstance(data.get("force", False), bool):
        raise WireError("bad_json", "force must be true or false")
    if not isinstance(data.get("file", ""), str):
        raise WireError("bad_json", "file must be the baseline file's text")
    return data


@bp.get("/baseline")
def status() -> Response:
    admin.query()
    reconciler = _reconciler()
    return jsonify(_docker(reconciler.status))


@bp.post("/baseline/apply")
def apply() -> Response:
    reconciler = _reconciler()
    data = _body()
    baseline = None
    if data.get("file"):
        try:
            baseline = reconciler.replace_file(data["file"])
        except BaselineError as exc:  # in the file sent: not this controller's own path
            raise BaselineInvalid(BaselineError(exc.problem, exc.service, exc.key)) from None
    report = reconciler.reconcile(f"apply by {g.actor}", force=data.get("force", False),
                                  actor=g.actor, baseline=baseline)
    if report.file_error is not None:
        raise BaselineInvalid(report.file_error)
    if report.error:
        raise WireError(report.error_code or "swarm_unavailable", report.error, 503)
    return jsonify(report.to_json())


@bp.get("/cluster")
def cluster() -> Response:
    admin.query()
    reconciler = _reconciler()
    health = _docker(lambda: read_cluster(reconciler.api))
    ctl = current_app.extensions["swarm_enroll"]
    health["keeper"] = describe(ctl.quorum(), ctl.state.doc(STATUS_KEY),
                                health["raft"]["has_quorum"])
    lease = ctl.state.doc(LEASE_KEY) or {}
    return jsonify({**health, "controllers": ctl.registry.view(),
                    "acting": lease.get("holder", "")})
