"""`enroll-controller`: create a controller's state (init) and run it (serve)."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import click

from agent import __version__
from agent.wire.errors import WireError
from agent.wire.keys import pin_of_certificate
from agent.wire.messages import validate_hostname
from controller.config import (
    DEFAULT_PORT,
    DEFAULT_STATE_DIR,
    DEFAULT_VIZ_SOCKET_DIR,
    ConfigError,
    parse_config,
)
from controller.dockerapi import APIError, DockerError, connect
from controller.pki import create_ca, issue_tls_cert, load_ca
from controller.rules import DEFAULT_RULES, RulesError, load_rules
from controller.state import State
from controller.state.sqlite import SQLiteBackend
from controller.swarm import SwarmError, init_swarm
from controller.tokens import ADMIN_PREFIX, adoption_secret, digest, new_secret

log = logging.getLogger("controller")


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group()
@click.version_option(__version__, prog_name="enroll-controller")
def main() -> None:
    """swarm-enroll controller: approves Pis and lets them join the swarm."""


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE_DIR,
              show_default=True, help="Where the CA, TLS certificate and database live.")
@click.option("--advertise-addr", required=True,
              help="This manager's LAN address (swarm advertise address, certificate SAN).")
@click.option("--hostname", default=socket.gethostname, show_default="this host's name")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--docker-host", default="unix:///var/run/docker.sock", show_default=True)
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Hostname rules to start with (default: a commented example).")
@click.option("--baseline", "baseline_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Baseline services file (default: deploy/baseline.yml, "
              "viz and nginx).")
@click.option("--viz-socket-dir", default=DEFAULT_VIZ_SOCKET_DIR, show_default=True,
              help="Directory of the read-only, filtered Docker API for viz ('' for none).")
@click.option("--no-swarm-init", is_flag=True,
              help="Do not touch Docker (e.g. on the admin's laptop, before flashing).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(state_dir: Path, advertise_addr: str, hostname: str, port: int, docker_host: str,
         rules_file: Path | None, baseline_file: Path | None, viz_socket_dir: str,
         no_swarm_init: bool, as_json: bool) -> None:
    """Create the enrollment CA, TLS certificate, admin token and config."""
    # Here, not at the top: `enroll-controller --version` must work without PyYAML.
    from controller.baseline.spec import BaselineError, default_baseline_text, parse_baseline

    if (state_dir / "ca.pem").exists():
        _fail(f"{state_dir} is already initialised; use another --state-dir or remove it")
    try:
        validate_hostname(hostname)  # here only: a controller.toml of before stays valid
    except WireError as exc:
        _fail(f"--hostname: {exc.message}")
    try:
        config = parse_config(state_dir, {"advertise_addr": advertise_addr,
                                          "hostname": hostname, "port": port,
                                          "docker_host": docker_host,
                                          "viz_socket_dir": viz_socket_dir})
        rules_text = rules_file.read_text() if rules_file else DEFAULT_RULES
        if rules_file:
            load_rules(rules_file)
        baseline_text = default_baseline_text() if baseline_file is None else \
            baseline_file.read_bytes()
        parse_baseline(baseline_text, source=str(baseline_file or "the default baseline"))
    except (ConfigError, RulesError, BaselineError) as exc:
        _fail(str(exc))
    swarm_id = ""
    if not no_swarm_init:
        try:
            swarm_id = init_swarm(connect(docker_host), advertise_addr)
        except SwarmError as exc:
            _fail(exc.message)
        except (DockerError, APIError) as exc:  # no daemon there, or one that refuses
            _fail(f"cannot use Docker at {docker_host}: {exc}; start Docker or pass "
                  "--no-swarm-init")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    ca = create_ca(config.ca_cert, config.ca_key, hostname)
    _, ca_key = load_ca(config.ca_cert, config.ca_key)
    issue_tls_cert(ca, ca_key, config.tls_cert, config.tls_key, hostname, [advertise_addr])
    admin_token = new_secret(ADMIN_PREFIX)
    state = State(SQLiteBackend(config.database))
    state.add_admin("admin", digest(admin_token))
    state.close()
    adoption_secret(config.adoption_secret)
    config.rules_path.write_text(rules_text)
    config.baseline_path.write_bytes(baseline_text)
    (state_dir / "controller.toml").write_text(config.to_toml())
    result = {"url": config.url, "pin": pin_of_certificate(ca), "admin_token": admin_token,
              "state_dir": str(state_dir), "swarm_id": swarm_id}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"Initialised {state_dir}.")
    click.echo(f"  controller URL : {result['url']}")
    click.echo(f"  CA pin         : {result['pin']}   (put this on every Pi: ca_pin)")
    click.echo(f"  admin token    : {admin_token}")
    click.echo("The admin token is shown only this once; keep it in a password manager.")
    if swarm_id:
        click.echo(f"  swarm          : {swarm_id[:12]} (this daemon is its first manager)")


@main.command()
@click.option("--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE_DIR,
              show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--docker-host", default="unix:///var/run/docker.sock", show_default=True,
              help="For a manager without controller.toml yet (promoted later): its Docker.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="For a manager without controller.toml yet: the HTTPS port.")
@click.option("--viz-socket-dir", default=DEFAULT_VIZ_SOCKET_DIR, show_default=True,
              help="For a manager without controller.toml yet: viz's filtered Docker API.")
@click.option("--log-file", default="", help="Also log to this file.")
def serve(state_dir: Path, log_level: str, docker_host: str, port: int, viz_socket_dir: str,
          log_file: str) -> None:
    """Serve the enrollment API over TLS and announce it over mDNS, on any manager: the
    state is the swarm's own, shared with the other managers' controllers. A manager
    promoted later writes its controller.toml from its Docker daemon and takes the CA key
    from the shared state. Exits (status 0) when this node stops being a manager."""
    from controller.serving import serve_on_this_manager

    try:
        serve_on_this_manager(state_dir, log_level, docker_host, port, viz_socket_dir,
                              log_file)
    except (ConfigError, RulesError, FileNotFoundError, SwarmError) as exc:
        _fail(getattr(exc, "message", None) or str(exc))


if __name__ == "__main__":
    sys.exit(main())
