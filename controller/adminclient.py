"""A small client of the admin API, for enrollctl, the lab and the tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import requests
from cryptography import x509

from agent.client import answer_json
from agent.wire.errors import WireError
from agent.wire.keys import check_pin_format, pin_of_certificate
from agent.wire.pinning import fetch_pinned_ca


def _cached_ca(url: str, pin: str) -> Path:
    """The pinned CA certificate, fetched once and kept in the user's cache by its pin."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "swarm-enroll"
    path = cache / f"ca-{pin.removeprefix('sha256:')[:32]}.pem"
    try:
        if pin_of_certificate(x509.load_pem_x509_certificate(path.read_bytes())) == pin:
            return path
    except (OSError, ValueError):
        pass
    pem, _ = fetch_pinned_ca(url, pin)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


class AdminClient:
    """Talks to the controllers at `url` (one, or several: every manager runs one),
    trusting only the CA that matches `pin` (or `ca_file`). A controller that does not
    answer is passed over for the next; `url` is then the one that answered."""

    def __init__(self, url: str | list[str], token: str, pin: str = "",
                 ca_file: Path | None = None, timeout: float = 30.0) -> None:
        if not pin and ca_file is None:
            raise WireError("no_pin", "give the controller's CA pin (--pin or ENROLLCTL_PIN) "
                            "or its CA file (--ca-file)")
        pin = check_pin_format(pin) if pin else ""
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url) if u]
        if not self.urls:
            raise WireError("no_url", "no controller URL")
        self.url = self.urls[0]
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace the pinned CA
        self.session.verify = str(ca_file or self._pinned_ca(pin))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _pinned_ca(self, pin: str) -> Path:
        error: WireError | None = None
        for url in self.urls:
            try:
                return _cached_ca(url, pin)
            except WireError as exc:
                if exc.code != "unreachable":
                    raise
                error = exc
        assert error is not None
        raise error

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        """Asked of the controller that answered last, else of the next that answers."""
        order = [self.url, *(u for u in self.urls if u != self.url)]
        for i, url in enumerate(order):
            try:
                response = self.session.request(method, url + path, json=body, params=params,
                                                timeout=self.timeout)
            except requests.exceptions.SSLError as exc:
                raise WireError("tls_failed", f"TLS to {url} failed: {exc}", 495) from None
            except requests.RequestException as exc:
                if i + 1 < len(order):
                    continue
                tried = ", ".join(order)
                raise WireError("unreachable", f"cannot reach {tried}: {type(exc).__name__}",
                                503) from None
            self.url = url
            break
        data = answer_json(response.status_code, response.content, path)
        if response.status_code >= 400:
            detail = {k: v for k, v in data.items() if k not in ("error", "message")}
            raise WireError(str(data.get("error", "error")), str(data.get("message", "")),
                            response.status_code, detail)
        return data

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
