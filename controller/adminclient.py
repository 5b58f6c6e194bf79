"""A small client of the admin API, for enrollctl, the lab and the tests."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from urllib3.exceptions import NewConnectionError

from agent.client import answer_json
from agent.wire.errors import WireError
from agent.wire.keys import check_pin_format, pin_of_certificate
from agent.wire.pinning import fetch_pinned_ca


def _cache_path(pin: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "swarm-enroll"
    return cache / f"ca-{pin.removeprefix('sha256:')[:32]}.pem"


def _cached_ca(pin: str) -> Path | None:
    """The pinned CA certificate kept in the user's cache by its pin, if it is there."""
    path = _cache_path(pin)
    try:
        if pin_of_certificate(x509.load_pem_x509_certificate(path.read_bytes())) == pin:
            return path
    except (OSError, ValueError):
        pass
    return None


def _innermost(exc: BaseException) -> BaseException:
    """The exception at the bottom of requests' and urllib3's wrapping (`reason`, the first
    argument, or the cause)."""
    for _ in range(10):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) \
                else exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def _nothing_sent(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached a controller: no connection was made, or
    TLS refused the server's certificate in the handshake (an impostor). Only then may a
    write be asked of another controller; any other failure may come after it was sent."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # MaxRetryError's
    return isinstance(reason, NewConnectionError) or isinstance(
        _innermost(exc), ssl.SSLCertVerificationError)


PROBE_TIMEOUT = 3.0  # seconds for a TCP connection to a controller not heard from yet


def _no_connection(url: str) -> str:
    """Why no TCP connection to the URL's host and port was made within PROBE_TIMEOUT, or
    "" if one was. A dead Pi's address takes none at all: without this, a request waits
    out its whole timeout (30 s) before the next controller is asked. Nothing is sent."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=PROBE_TIMEOUT).close()
    except TimeoutError:
        return f"no connection within {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return (exc.strerror or type(exc).__name__).lower()
    return ""


def _why(exc: requests.RequestException, timeout: float) -> tuple[str, str]:
    """(code, one short line) for a controller that gave no answer (never the request's
    headers)."""
    inner = _innermost(exc)
    if isinstance(inner, ssl.SSLCertVerificationError):
        return "tls_failed", f"its certificate fails the pinned CA ({inner.verify_message})"
    if isinstance(inner, ssl.SSLError):
        return "tls_failed", str(inner.reason or inner)
    if isinstance(exc, requests.Timeout):
        return "unreachable", f"no answer within {timeout:g} s"
    if isinstance(inner, OSError) and inner.strerror:
        return "unreachable", inner.strerror.lower()
    return "unreachable", str(inner) or type(inner).__name__


def _none_answered(what: str, failed: list[tuple[str, str, str]]) -> WireError:
    """One error naming each (url, code, why) tried; its code is theirs when all failed
    alike (a wrong pin, say), else unreachable."""
    codes = {code for _, code, _ in failed}
    return WireError(codes.pop() if len(codes) == 1 else "unreachable",
                     f"{what}: " + "; ".join(": ".join(f) for f in failed), 503)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme == "https" and bool(parts.hostname) and parts.port is not None
    except ValueError:  # a bad IPv6 address, a port out of range
        ok = False
    if not ok:
        raise WireError("bad_url", f"{url!r} is not a controller URL: give "
                        "https://<host>:<port>, such as https://192.168.1.10:8443 (the "
                        "admin token never goes over plain HTTP)")


class AdminClient:
    """Talks to the controllers at `url` (one, or several: every manager runs one),
    trusting only the CA that matches `pin` (or `ca_file`). A controller that does not
    answer, or whose certificate fails the pin (an impostor), is passed over for the next
    (and named in `passed_over`); `url` is then the one that answered, and `answered_by`
    the one whose answer (a refusal too) the last request got, or "" if none answered."""

    def __init__(self, url: str | list[str], token: str, pin: str = "",
                 ca_file: Path | None = None, timeout: float = 30.0) -> None:
        if not pin and ca_file is None:
            raise WireError("no_pin", "give the controller's CA pin (--pin or ENROLLCTL_PIN) "
                            "or its CA file (--ca-file)")
        pin = check_pin_format(pin) if pin else ""
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url) if u]
        if not self.urls:
            raise WireError("no_url", "no controller URL")
        for u in self.urls:  # the admin token goes to each of them
            _check_url(u)
        if ca_file is not None and not ca_file.is_file():
            raise WireError("bad_ca_file", f"{ca_file}: no such file; give the controller's "
                            "CA certificate (ca.pem in its state dir), or its pin (--pin)")
        self.url = self.urls[0]
        self.passed_over: list[str] = []
        self.answered_by = ""
        self._answered: set[str] = set()  # controllers that gave this client an answer
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace the pinned CA
        self.session.verify = str(ca_file or _cached_ca(pin) or self._fetch_ca(pin))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _fetch_ca(self, pin: str) -> Path:
        """The CA from the first controller that passes the pin check, kept in the cache;
        the others before it are passed over."""
        failed: list[tuple[str, str, str]] = []
        for url in self.urls:
            try:
                pem, _ = fetch_pinned_ca(url, pin)
            except WireError as exc:
                failed.append((url, exc.code, exc.message))
                continue
            self.passed_over += [": ".join(f) for f in failed]
            self.url = url
            self._answered.add(url)
            path = _cache_path(pin)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pem)
            return path
        raise _none_answered("no controller passed the pin check", failed)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        """Asked of the controller that answered last, else of the next that answers. A
        write goes on to the next only when it surely never reached the one before: it
        may have been applied there, and must not be applied twice. So a write goes only
        to a controller that has answered: if none has yet, a read (/healthz) finds one,
        passing over any address that fails in any way (one that hangs up in the TLS
        handshake, say, which a write could not tell from one that hung up after it)."""
        if method not in ("GET", "HEAD") and self.url not in self._answered:
            self._send("GET", "/healthz", None, None)
        response = self._send(method, path, body, params)
        data = answer_json(response.status_code, response.content, path)
        if response.status_code >= 400:
            detail = {k: v for k, v in data.items() if k not in ("error", "message")}
            raise WireError(str(data.get("error", "error")), str(data.get("message", "")),
                            response.status_code, detail)
        return data

    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              params: dict[str, Any] | None) -> requests.Response:
        order = [self.url, *(u for u in self.urls if u != self.url)]
        failed: list[tuple[str, str, str]] = []
        self.answered_by = ""
        for url in order:
            if len(order) > 1 and url not in self._answered:  # one to pass over quickly?
                why = _no_connection(url)
                if why:
                    failed.append((url, "unreachable", why))
                    continue
            try:
                response = self.session.request(method, url + path, json=body, params=params,
                                                timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                code, why = _why(exc, self.timeout)
                if method not in ("GET", "HEAD") and not _nothing_sent(exc):
                    raise WireError("no_answer", f"{url}: {code}: {why}, after {method} {path} "
                                    "was sent; it may have been applied there, so it was not "
                                    "sent to another controller: look before repeating it",
                                    503) from None
                failed.append((url, code, why))
                continue
            self.passed_over += [": ".join(f) for f in failed]
            self.url = self.answered_by = url
            self._answered.add(url)
            return response
        raise _none_answered("no controller answered", failed)

    def pages(self, path: str, key: str, cursor: str, params: dict[str, Any] | None = None,
              ) -> list[dict[str, Any]]:
        """Every item of a paged list, following `next` (as `cursor`=) to the end."""
        items: list[dict[str, Any]] = []
        query = dict(params or {})
        while True:
            page = self.request("GET", path, params=query)
            items += page[key]
            if not page.get("next"):
                return items
            query[cursor] = page["next"]

    def nodes(self, state: str = "") -> list[dict[str, Any]]:
        return self.pages("/v1/nodes", "nodes", "after", {"state": state} if state else None)

    def node(self, ref: str, fingerprint: str = "") -> dict[str, Any]:
        return self.request("GET", f"/v1/nodes/{ref}",
                            params={"fingerprint": fingerprint} if fingerprint else None)

    def _decide(self, action: str, ref: str, reason: str, fingerprint: str) -> dict[str, Any]:
        body = {"reason": reason, **({"fingerprint": fingerprint} if fingerprint else {})}
        return self.request("POST", f"/v1/nodes/{ref}/{action}", body)

    def approve(self, ref: str, reason: str = "", fingerprint: str = "") -> dict[str, Any]:
        return self._decide("approve", ref, reason, fingerprint)

    def reject(self, ref: str, reason: str = "", fingerprint: str = "") -> dict[str, Any]:
        return self._decide("reject", ref, reason, fingerprint)

    def revoke(self, ref: str, reason: str = "", fingerprint: str = "") -> dict[str, Any]:
        return self._decide("revoke", ref, reason, fingerprint)

    def forget(self, ref: str, reason: str = "", fingerprint: str = "") -> dict[str, Any]:
        return self._decide("forget", ref, reason, fingerprint)

    def prune(self, older_than_seconds: float | None = None) -> list[dict[str, Any]]:
        body = {} if older_than_seconds is None else {"older_than_seconds": older_than_seconds}
        return self.request("POST", "/v1/prune", body)["removed"]

    def create_token(self, ttl_seconds: int, uses: int, hostname_glob: str = "",
                     description: str = "") -> dict[str, Any]:
        return self.request("POST", "/v1/tokens", {
            "ttl_seconds": ttl_seconds, "uses": uses, "hostname_glob": hostname_glob,
            "description": description})

    def tokens(self) -> list[dict[str, Any]]:
        return self.pages("/v1/tokens", "tokens", "after")

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/tokens/{token_id}")

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v}
        return self.request("GET", "/v1/audit", params=params)["events"]

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz")

    def baseline(self) -> dict[str, Any]:
        return self.request("GET", "/v1/baseline")

    def baseline_apply(self, file_text: str | None = None, force: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"force": force}
        if file_text is not None:
            body["file"] = file_text
        return self.request("POST", "/v1/baseline/apply", body)

    def cluster(self) -> dict[str, Any]:
        return self.request("GET", "/v1/cluster")


def pinned_from(urls: list[str], pin: str) -> tuple[list[str], list[str]]:
    """`urls` from the first whose TLS passes the pin check on, and why each one before it
    failed. An announcement is anyone's (the pin in it is public): a rogue one, with
    another CA or nobody listening, must not stop us from trying the others."""
    passed_over: list[str] = []
    for i, url in enumerate(urls):
        try:
            fetch_pinned_ca(url, pin)
        except WireError as exc:
            passed_over.append(f"{url}: {exc.code}: {exc.message}")
            continue
        return urls[i:], passed_over
    return [], passed_over


def discover(pin: str, seconds: float = 3.0) -> list[str]:
    """The controllers announced over mDNS on this host's LAN that hold our CA pin."""
    from agent.avahi import RUN_DIR, SERVICES_DIR
    from agent.discovery import ControllerFinder
    from agent.responder import open_responder
    from agent.wire.mdns import CONTROLLER_SERVICE

    finder = ControllerFinder(check_pin_format(pin))
    mdns = open_responder("auto", [], SERVICES_DIR, RUN_DIR, keep_on_close=False)
    try:
        mdns.browse(CONTROLLER_SERVICE, finder.found, finder.gone)
        finder.changed.wait(seconds)
        time.sleep(0.5)  # the other managers answer a moment later
        return finder.urls()
    finally:
        mdns.close()
