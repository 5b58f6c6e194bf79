"""A deeply nested body is refused with a 4xx and one log line (issue 10, section 5)."""

from __future__ import annotations

import json
import logging

import pytest

from ...helpers import Controller, b64url

DEEP = "[" * 5000 + "]" * 5000
# As UTF-16, which json.loads guesses from bytes: its quote-like bytes hid the depth
DEEP_UTF16 = ('["\u2220",' + "[" * 1100 + '"\u2220"' + "]" * 1100 + "]").encode("utf-16-le")


@pytest.mark.parametrize("payload", [DEEP, DEEP_UTF16], ids=["utf8", "utf16"])
def test_signed_deep_payload_is_400_with_one_log_line(
        controller: Controller, caplog: pytest.LogCaptureFixture, payload: str | bytes) -> None:
    pi = controller.agent("man-1")
    header = json.dumps({"alg": "Ed25519", "jwk": dict(pi.key.as_dict(private=False)),
                         "nonce": pi.nonce(), "url": "/v1/enrollments"})
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    body = f"{signing_input}.{b64url(pi.key.private_key.sign(signing_input.encode()))}"
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        response = pi.post_raw("/v1/enrollments", body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "bad_payload"
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]
    assert "bad_payload" in caplog.records[0].getMessage()
    assert [r for d in controller.state.hosts() for r in d.records] == []


@pytest.mark.parametrize("body", [DEEP.encode(), DEEP_UTF16], ids=["utf8", "utf16"])
def test_admin_deep_body_is_bad_json(controller: Controller, body: bytes) -> None:
    response = controller.client.post("/v1/tokens", data=body, content_type="application/json",
                                      headers=controller.admin)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "bad_json"
    assert controller.state.tokens() == []
