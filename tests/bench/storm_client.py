"""Load generator of the enrollment storm: N simulated agents, run inside a lab Pi.

Each simulated agent does what a real agent does on first contact
(agent/wire/pinning.py connect_pinned, agent/client.py), with real code: a fresh Ed25519
key (made before the clock starts), the bare TLS handshake that reads the controller's
chain to check it against the CA pin (the check itself, fetch_pinned_ca, runs once per
distinct chain: the controller's work is the same, the load generator's smaller), then,
on that same connection, `HEAD /v1/nonce` for a real nonce and `POST
/v1/enrollments` signed with agent.wire.jws.sign_request and carrying the bootstrap
token, until a 200 with a grant: one TLS handshake per attempt, as the agent's. The POST
goes on the HEAD's connection unless the answer closed it (the controller keeps up to 128
idle connections alive; with cheroot's default of 10, most did in a storm): then, as
http.client (the agent's) does, on a new one verified against the pinned CA. All N start
at t0; at most `--concurrency` are in flight (a thread pool). A failed attempt (transport
error, timeout, any non-200) counts as an error and the agent retries after a jittered
backoff, like the real one, within a global deadline. Grants are verified (verify_grant,
against the pinned CA and the agent's own thumbprint) after the clock stops. Prints one
JSON object.

Its own CPU is nearly all TLS: about 1.5 ms of client CPU per handshake with OpenSSL 3.0.
Until 2026-12-02 it made a second, verified connection after the pin check, as agents
did before their first request rode on the checked one (two handshakes per agent on both
sides; with cheroot's default of 10 kept-alive connections, some 2.6). Not the threads:
one agent at a time costs the same per agent, and asyncio (streams, or non-blocking
SSLSocket on the loop) was no cheaper (measured 2026-12-02).

Usage: STORM_TOKEN=seb_... storm_client.py --url https://IP:PORT --pin sha256:... --n 1000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from joserfc.jwk import OKPKey

from agent import __version__
from agent.wire.jws import sign_request, verify_grant
from agent.wire.keys import ca_public_key
from agent.wire.messages import EnrollmentRequest, SwarmState
from agent.wire.pinning import bare_context, fetch_pinned_ca, presented_chain


def host_cpu_seconds() -> tuple[float, float]:
    """The whole host's (all cores) busy CPU seconds, and those the hypervisor stole (a
    virtual machine's cores ran another guest meanwhile), from /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / tick, f[7] / tick


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--pin", required=True)
    p.add_argument("--token", default=os.environ.get("STORM_TOKEN", ""),
                   help="the bootstrap token (prefer STORM_TOKEN: a command line is public)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--hostname-prefix", default="storm-")
    p.add_argument("--address", default="")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole storm")
    p.add_argument("--timeout", type=float, default=15.0, help="per request, as the agent's")
    p.add_argument("--max-attempts", type=int, default=8)
    args = p.parse_args(argv)
    if not args.token:
        p.error("no bootstrap token: set STORM_TOKEN")
    return args


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        parts = urlsplit(args.url)
        self.host, self.port = parts.hostname or "", parts.port or 443
        self.keys = [OKPKey.generate_key("Ed25519", private=True) for _ in range(args.n)]
        self.t0 = 0.0
        self.deadline = 0.0
        self.lock = threading.Lock()
        self.errors: dict[str, int] = {}
        self.connections = 0  # TLS connections made (handshakes), all attempts
        self.phases: dict[str, list[float]] = {}  # step of an attempt -> seconds each took
        self.results: list[dict[str, Any] | None] = [None] * args.n
        self.ca_pem = b""
        self.checked: dict[bytes, ssl.SSLContext] = {}
        self.bare_ctx = bare_context()  # only to read the chain, as the agent does

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def payload(self, i: int) -> dict[str, Any]:
        return EnrollmentRequest(
            hostname=f"{self.args.hostname_prefix}{i:05d}", hardware_id=f"5170{i:012x}",
            arch="armv6l", model="Raspberry Pi Zero W Rev 1.1",
            addresses=[self.args.address] if self.args.address else [],
            docker_version="20.10.24", agent_version=__version__,
            bootstrap_token=self.args.token, swarm=SwarmState(),
        ).to_json()

    def pin_check(self) -> tuple[ssl.SSLSocket, ssl.SSLContext]:
        """The agent's first contact: a bare handshake that reads the presented chain, which
        must match the pin; the first request then rides on this connection. The handshake
        is done for every agent (the controller's cost); the chain's check (fetch_pinned_ca:
        parse, pin, issuer signature) once per distinct chain, so that the load generator's
        own CPU goes into load. Returns the connection and the context verified against the
        pinned CA, for any later connection."""
        tls, ders = presented_chain(self.bare_ctx, self.host, self.port, self.args.timeout)
        chain = b"".join(ders)
        try:
            with self.lock:
                ctx = self.checked.get(chain)
            if ctx is None:
                pem, _ = fetch_pinned_ca(self.args.url, self.args.pin, timeout=self.args.timeout)
                ctx = ssl.create_default_context(cadata=pem.decode())
                with self.lock:
                    self.ca_pem = pem
                    self.checked[chain] = ctx
        except BaseException:
            tls.close()
            raise
        return tls, ctx

    def phase(self, name: str, since: float) -> float:
        """Note how long a step of an attempt took (from `since`); returns now."""
        now = time.monotonic()
        with self.lock:
            self.phases.setdefault(name, []).append(now - since)
        return now

    def attempt(self, i: int) -> tuple[int, dict[str, Any]]:
        t = time.monotonic()
        tls, ctx = self.pin_check()
        with self.lock:
            self.connections += 1
        t = self.phase("pin check (connect, bare handshake)", t)
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx,
                                           timeout=self.args.timeout)
        conn.sock = tls  # the checked connection carries the first request, as the agent's
        try:
            conn.request("HEAD", "/v1/nonce", headers={"User-Agent": "swarm-enroll-agent"})
            r = conn.getresponse()
            r.read()
            t = self.phase("HEAD /v1/nonce", t)
            nonce = r.getheader("Replay-Nonce", "")
            if r.status >= 400 or not nonce:
                return r.status, {}
            body = sign_request(self.keys[i], self.payload(i), nonce, "/v1/enrollments")
            t = self.phase("sign the request (Ed25519 JWS)", t)
            if conn.sock is None:  # the HEAD's answer closed it: http.client connects anew
                with self.lock:
                    self.connections += 1
            conn.request("POST", "/v1/enrollments", body=body,
                         headers={"Content-Type": "application/jose",
                                  "User-Agent": "swarm-enroll-agent"})
            r = conn.getresponse()
            data = r.read()
            self.phase("POST /v1/enrollments until its answer", t)
            try:
                answer = json.loads(data)
            except ValueError:
                answer = {}
            return r.status, answer
        finally:
            conn.close()

    def agent(self, i: int) -> None:
        start = time.monotonic()
        delay = 1.0
        for attempt in range(1, self.args.max_attempts + 1):
            try:
                status, answer = self.attempt(i)
            except Exception as exc:
                kind = getattr(exc, "code", "") or type(exc).__name__
                status, answer = 0, {"error": kind}
            if status == 200 and answer.get("grant"):
                self.results[i] = {"start": start - self.t0, "grant": time.monotonic() - self.t0,
                                   "attempts": attempt, "token": answer["grant"]}
                return
            self.error(f"{status}:{answer.get('error', answer.get('status', ''))}")
            wait = delay * random.uniform(0.8, 1.2)
            delay = min(delay * 1.6, 15.0)
            if time.monotonic() + wait > self.deadline:
                break
            time.sleep(wait)
        self.results[i] = {"start": start - self.t0, "grant": None, "attempts": attempt}

    def run(self) -> dict[str, Any]:
        n = self.args.n
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        host0, steal0 = host_cpu_seconds()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.args.deadline
        with ThreadPoolExecutor(max_workers=min(self.args.concurrency, n)) as pool:
            list(pool.map(self.agent, range(n)))
        elapsed = time.monotonic() - self.t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        host1, steal1 = host_cpu_seconds()
        host_busy, steal = host1 - host0, steal1 - steal0
        client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        verified = bad = 0
        if self.ca_pem:
            ca_key = ca_public_key(self.ca_pem)
            for i, r in enumerate(self.results):
                if r and r.get("token"):
                    try:
                        verify_grant(r["token"], ca_key, self.keys[i].thumbprint(),
                                     f"{self.args.hostname_prefix}{i:05d}")
                        verified += 1
                    except Exception:
                        bad += 1
        done = [r for r in self.results if r and r["grant"] is not None]
        return {
            "n": n, "concurrency": min(self.args.concurrency, n), "elapsed": elapsed,
            "granted": len(done), "not_granted": n - len(done), "errors": self.errors,
            "error_count": sum(self.errors.values()), "grants_verified": verified,
            "grants_bad": bad, "client_cpu_s": client_cpu, "host_busy_s": host_busy,
            "steal_cores": steal / elapsed if elapsed else 0.0,
            "connections_per_agent": self.connections / n if n else 0.0,
            "client_cpu_share": client_cpu / elapsed if elapsed else 0.0,
            "start": [round(r["start"], 4) for r in done],
            "grant": [round(r["grant"], 4) for r in done],
            "attempts_max": max((r["attempts"] for r in done), default=0),
            "phases_s": {name: _quantiles(took) for name, took in self.phases.items()},
        }


def _quantiles(took: list[float]) -> dict[str, float]:
    """Median, p95 and mean of one step's durations, in seconds."""
    took = sorted(took)
    return {"p50": took[len(took) // 2], "p95": took[min(len(took) - 1, len(took) * 95 // 100)],
            "mean": sum(took) / len(took)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(Storm(args).run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
