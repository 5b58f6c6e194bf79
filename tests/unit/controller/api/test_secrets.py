"""Join tokens and bootstrap secrets never show up where they should not."""

from __future__ import annotations

import logging

import pytest

from ...helpers import Controller, swarm_node_id


def _admin_bodies(controller: Controller) -> dict[str, str]:
    paths = ["/v1/nodes", "/v1/audit", "/v1/tokens", "/v1/audit?limit=1000"]
    records = [r for d in controller.state.hosts() for r in d.records]
    paths += [f"/v1/nodes/{n.id}" for n in records]
    paths += [f"/v1/nodes/{n.hostname}" for n in records]
    bodies = {}
    for path in paths:
        response = controller.admin_get(path)
        assert response.status_code == 200, path
        bodies[path] = response.get_data(as_text=True)
    return bodies


def _journey(controller: Controller) -> str:
    """Token approval, join, a refused token, a rejection: returns the bootstrap secret."""
    secret = controller.create_token(uses=1)["token"]
    pi = controller.agent("tok-1")
    body = pi.enroll(bootstrap_token=secret).get_json()
    assert body["status"] == "approved"
    node_id = swarm_node_id()
    controller.swarm.add_member(node_id, "tok-1")
    assert pi.joined(body["id"], node_id).get_json()["status"] == "joined"
    # A second Pi with the spent secret, and one matching no rule.
    assert controller.agent("tok-2").enroll(bootstrap_token=secret).status_code == 202
    assert controller.agent("other-1").enroll(bootstrap_token=secret).status_code == 200
    return secret


def test_join_token_never_in_admin_answers_or_logs(controller: Controller,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _journey(controller)
    assert controller.swarm.worker.startswith("SWMTKN-")
    bodies = _admin_bodies(controller)
    assert any("tok-1" in b for b in bodies.values())  # the bodies are the real thing
    for path, text in bodies.items():
        for secret in (controller.swarm.worker, controller.swarm.manager_join_token, "SWMTKN-"):
            assert secret not in text, path
    assert caplog.records, "nothing was logged: the log check would prove nothing"
    assert "SWMTKN-" not in caplog.text


def test_bootstrap_secret_only_in_create_answer(controller: Controller,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = _journey(controller)
    for path, text in _admin_bodies(controller).items():
        assert secret not in text, path
        assert secret.removeprefix("seb_") not in text, path
    assert secret not in caplog.text
    # The secret is not stored either, only its hash.
    files = [controller.config.database,
             controller.config.database.with_name("state.db-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert secret.encode() not in raw


def test_join_token_not_in_errors(controller: Controller) -> None:
    pi = controller.agent("man-1")
    enrollment = pi.enroll().get_json()["id"]
    for response in (pi.joined(enrollment, swarm_node_id()), pi.poll("enr_x"),
                     pi.enroll(role="manager")):
        assert response.status_code >= 400
        assert "SWMTKN-" not in response.get_data(as_text=True)
