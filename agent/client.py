"""The agent's side of the enrollment protocol: signed requests over pinned HTTPS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from joserfc.jwk import OKPKey

from agent.wire import safejson
from agent.wire.errors import WireError
from agent.wire.jws import sign_request

USER_AGENT = "swarm-enroll-agent"
_CLUSTER = re.compile(r"^[a-z0-9]{1,64}\Z")


def answer_json(response: requests.Response, where: str) -> dict[str, Any]:
    """A controller's answer as a JSON object, or WireError `bad_answer` (never a crash)."""
    try:
        data = safejson.loads(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise WireError("bad_answer", f"{where} answered {response.status_code} without a "
                        "JSON object", 502)
    return data


class Unreachable(Exception):
    """The controller did not answer; try another one or later."""


class ControllerClient:
    """One controller, trusted through the CA file that was checked against the pin."""

    def __init__(self, url: str, ca_file: Path, key: OKPKey, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.session = requests.Session()
        # Without this, REQUESTS_CA_BUNDLE in the environment silently replaces our CA
        # with the system store, and *_proxy would route LAN traffic through a proxy.
        self.session.trust_env = False
        self.session.verify = str(ca_file)
        self.session.headers["User-Agent"] = USER_AGENT
        self._nonce = ""

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout,
                                            **kwargs)
        except requests.exceptions.SSLError as exc:
            raise WireError("tls_failed", f"TLS to {self.url} failed: {exc}", 495) from None
        except requests.RequestException as exc:
            raise Unreachable(f"{self.url}: {type(exc).__name__}") from None
        self._nonce = response.headers.get("Replay-Nonce", "")
        return response

    def _fresh_nonce(self) -> str:
        nonce, self._nonce = self._nonce, ""
        if not nonce:
            self._send("HEAD", "/v1/nonce")
            nonce, self._nonce = self._nonce, ""
        if not nonce:
            raise WireError("no_nonce", f"{self.url} gave no nonce; is it a swarm-enroll "
                            "controller?", 502)
        return nonce

    def signed(self, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """POST a signed request; one retry when the nonce was stale (controller restart)."""
        for attempt in range(2):
            body = sign_request(self.key, payload, self._fresh_nonce(), path)
            response = self._send("POST", path, data=body,
                                  headers={"Content-Type": "application/jose"})
            data = answer_json(response, f"{self.url}{path}")
            if response.status_code < 400:
                return response.status_code, data
            retry = response.headers.get("Retry-After", "")
            error = WireError(str(data.get("error", "error")), str(data.get("message", "")),
                              response.status_code,
                              retry_after=int(retry) if retry.isdigit() else 0)
            if error.code != "bad_nonce" or attempt:
                raise error
        raise AssertionError("unreachable")

    def cluster(self) -> str:
        """The start of this controller's swarm id ('' if it does not say).

        Asked here, over TLS whose chain passed the pin check, never taken from mDNS: an
        announcement is anyone's, and the pin it carries is public.
        """
        answer = answer_json(self._send("GET", "/healthz"), f"{self.url}/healthz")
        cluster = answer.get("cluster", "")
        return cluster if isinstance(cluster, str) and _CLUSTER.match(cluster) else ""

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.signed("/v1/enrollments", request)[1]

    def poll(self, enrollment_id: str) -> dict[str, Any]:
        return self.signed(f"/v1/enrollments/{enrollment_id}/poll", {})[1]

    def joined(self, enrollment_id: str, node_id: str) -> dict[str, Any]:
        return self.signed(f"/v1/enrollments/{enrollment_id}/joined", {"node_id": node_id})[1]

    def close(self) -> None:
        self.session.close()
