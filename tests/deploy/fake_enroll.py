"""Stand-ins for enroll-controller and enroll-agent that implement only the lab's contract.

They let the lab's controller/agent start-up code be tested before (and independently of)
the real programs: `fake_enroll.py controller init|serve ...`, `fake_enroll.py agent run ...`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import json
import secrets
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PORT = 8443


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey,
          issuer: str, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def controller_init(args: argparse.Namespace) -> int:
    d = Path(args.state_dir)
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("fake CA", ca_key, ca_key, "fake CA", ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("controller", key, ca_key, "fake CA", ca=False, ip=args.advertise_addr)
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "tls.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    (d / "tls.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    spki = ca.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    client = docker.DockerClient(base_url=args.docker_host)
    client.swarm.init(advertise_addr=args.advertise_addr)
    info = {
        "url": f"https://{args.advertise_addr}:{PORT}",
        "pin": "sha256:" + hashlib.sha256(spki).hexdigest(),
        "admin_token": secrets.token_urlsafe(16),
        "swarm_node": client.info()["Swarm"]["NodeID"],
        "rules": args.rules,
    }
    (d / "fake.json").write_text(json.dumps({**info, "addr": args.advertise_addr}))
    print("fake controller: init done", file=sys.stderr)
    print(json.dumps(info))
    return 0


def controller_serve(args: argparse.Namespace) -> int:
    d = Path(args.state_dir)
    conf = json.loads((d / "fake.json").read_text())

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"ok": True}) if self.path == "/healthz" else self._send(404, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path != "/v1/tokens":
                return self._send(404, {})
            if self.headers.get("Authorization") != f"Bearer {conf['admin_token']}":
                return self._send(401, {"error": "unauthorized"})
            if body.get("uses") != 100 or body.get("ttl_seconds") != 86400:
                return self._send(400, {"error": "bad request"})
            return self._send(201, {"token": "fake-bootstrap-token"})

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "tls.pem", d / "tls.key")
    server = ThreadingHTTPServer((conf["addr"], PORT), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fake controller: serving on {conf['addr']}:{PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


def agent_run(args: argparse.Namespace) -> int:
    """Prints its config; on a manager, runs `controller_command` (as the real one does)."""
    conf = tomllib.loads(Path(args.config).read_text())
    shown = {k: ("<set>" if k == "bootstrap_token" else v) for k, v in conf.items()}
    print(f"fake agent: {json.dumps(shown)}", flush=True)
    child = None
    swarm = docker.DockerClient(base_url=conf["docker_host"]).info()["Swarm"]
    if conf.get("controller_command") and swarm.get("ControlAvailable"):
        with open(conf["controller_log"], "ab") as log:
            child = subprocess.Popen(conf["controller_command"], stdout=log, stderr=log)

    def stop(*_: object) -> None:
        if child is not None:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="prog", required=True)
    ctl = sub.add_parser("controller").add_subparsers(dest="cmd", required=True)
    init = ctl.add_parser("init")
    for opt in ("--state-dir", "--advertise-addr", "--docker-host", "--rules"):
        init.add_argument(opt, required=True)
    init.add_argument("--json", action="store_true", required=True)
    init.add_argument("--viz-socket-dir", required=True)
    serve = ctl.add_parser("serve")
    for opt in ("--state-dir", "--docker-host", "--viz-socket-dir"):
        serve.add_argument(opt, required=True)
    agent = sub.add_parser("agent").add_subparsers(dest="cmd", required=True)
    agent.add_parser("run").add_argument("--config", required=True)
    args = p.parse_args()
    return {("controller", "init"): controller_init, ("controller", "serve"): controller_serve,
            ("agent", "run"): agent_run}[(args.prog, args.cmd)](args)


if __name__ == "__main__":
    sys.exit(main())
