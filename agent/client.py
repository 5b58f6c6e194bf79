"""The agent's side of the enrollment protocol: signed requests over pinned HTTPS.

http.client and ssl, not requests: the resident agent keeps ~7 MB less, and nothing in
the environment (proxies, REQUESTS_CA_BUNDLE, SSL_CERT_FILE) can change whom it trusts:
the context holds the pinned CA file and nothing else.
"""

from __future__ import annotations

import http.client
import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.wire import safejson
from agent.wire.errors import WireError
from agent.wire.messages import MAX_BODY_BYTES
from agent.wire.signing import sign_request

USER_AGENT = "swarm-enroll-agent"
_CLUSTER = re.compile(r"^[a-z0-9]{1,64}\Z")
MAX_ANSWER = 4 * MAX_BODY_BYTES  # a grant with every controller named is far smaller


def answer_json(status: int, content: bytes, where: str) -> dict[str, Any]:
    """A controller's answer as a JSON object, or WireError `bad_answer` (never a crash)."""
    try:
        data = safejson.loads(content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise WireError("bad_answer", f"{where} answered {status} without a JSON object", 502)
    return data


class Unreachable(Exception):
    """The controller did not answer; try another one or later."""


def pinned_context(ca_file: Path) -> ssl.SSLContext:
    """Ordinary verified TLS whose one trust anchor is the pinned CA (no system store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks hostname and chain
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


class Answer:
    """Status, headers and body (at most MAX_ANSWER bytes) of one controller answer."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content


class ControllerClient:
    """One controller, trusted through the CA file that was checked against the pin.

    `sock` is the TLS connection that passed the pin check (agent/wire/pinning.py): the
    first request rides on it instead of a second handshake.
    """

    def __init__(self, url: str, ca_file: Path, key: Any, timeout: float = 15.0,
                 sock: ssl.SSLSocket | None = None) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise WireError("bad_url", f"controller URL must be https://host:port, not {url!r}")
        self.key = key
        self.timeout = timeout
        self._conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443,
                                                 timeout=timeout,
                                                 context=pinned_context(ca_file))
        if sock is not None:
            sock.settimeout(timeout)
            self._conn.sock = sock
        self._nonce = ""

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> Answer:
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        content = response.read(MAX_ANSWER + 1)
        if len(content) > MAX_ANSWER:
            self._conn.close()
            raise WireError("bad_answer", f"{self.url}{path} answered more than "
                            f"{MAX_ANSWER} bytes", 502)
        if response.will_close or not response.isclosed():
            self._conn.close()  # the next request opens a new connection
        return Answer(response.status, response.msg, content)

    def _send(self, method: str, path: str, body: bytes | None = None,
              content_type: str = "") -> Answer:
        headers = {"User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            reused = self._conn.sock is not None
            try:
                answer = self._exchange(method, path, body, headers)
                break
            except ssl.SSLError as exc:
                self._conn.close()
                raise WireError("tls_failed", f"TLS to {self.url} failed: {exc}", 495) from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # a kept-alive connection the controller closed meanwhile: once more, anew
                self._conn.close()
                if reused and not attempt:
                    continue
                raise Unreachable(f"{self.url}: connection closed") from None
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                raise Unreachable(f"{self.url}: {type(exc).__name__}") from None
        self._nonce = answer.headers.get("Replay-Nonce", "") or ""
        return answer

    def prefetch_nonce(self) -> None:
        """Ask for the next request's nonce now (while waiting for something else)."""
        if not self._nonce:
            self._send("HEAD", "/v1/nonce")

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
            answer = self._send("POST", path, body.encode(), "application/jose")
            data = answer_json(answer.status, answer.content, f"{self.url}{path}")
            if answer.status < 400:
                return answer.status, data
            retry = answer.headers.get("Retry-After", "") or ""
            error = WireError(str(data.get("error", "error")), str(data.get("message", "")),
                              answer.status, retry_after=int(retry) if retry.isdigit() else 0)
            if error.code != "bad_nonce" or attempt:
                raise error
        raise AssertionError("unreachable")

    def cluster(self) -> str:
        """The start of this controller's swarm id ('' if it does not say).

        Asked here, over TLS whose chain passed the pin check, never taken from mDNS: an
        announcement is anyone's, and the pin it carries is public.
        """
        answer = self._send("GET", "/healthz")
        cluster = answer_json(answer.status, answer.content, f"{self.url}/healthz").get(
            "cluster", "")
        return cluster if isinstance(cluster, str) and _CLUSTER.match(cluster) else ""

    def enroll(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.signed("/v1/enrollments", request)[1]

    def poll(self, enrollment_id: str) -> dict[str, Any]:
        return self.signed(f"/v1/enrollments/{enrollment_id}/poll", {})[1]

    def joined(self, enrollment_id: str, node_id: str) -> dict[str, Any]:
        return self.signed(f"/v1/enrollments/{enrollment_id}/joined", {"node_id": node_id})[1]

    def close(self) -> None:
        self._conn.close()
