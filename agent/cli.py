"""`enroll-agent`: the daemon that enrolls this Pi (and `id`, to show who it is)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import click

from agent import __version__
from agent.config import DEFAULT_CONFIG, AgentConfig, ConfigError, load_config, local_hostname
from agent.logs import setup_logging


def _config(path: Path) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="enroll-agent")
def main() -> None:
    """swarm-enroll agent: enrolls this Pi into the swarm."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
def run(config_path: Path) -> None:
    """Announce this Pi, find the controller, enroll and join. Runs until stopped, or,
    where avahi announces this Pi, until joined (enroll-agent-check.timer goes on)."""
    from agent.daemon import StartError
    from agent.daemon import run as run_daemon

    try:
        run_daemon(config_path)
    except StartError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
def check(config_path: Path) -> None:
    """Check in with a controller once and exit (enroll-agent-check.timer runs it once the
    Pi has joined): exit 0 joined, 3 handed over to the resident agent, 4 revoked, 75
    Docker did not answer."""
    from agent.checkin import check as check_in

    config = _config(config_path)
    setup_logging(config.log_level, config.log_file)
    raise SystemExit(check_in(config))


def _identity(config: AgentConfig) -> tuple[str, dict[str, str]]:
    """This Pi's agent id (its key made if there is none yet, as the agent makes it) and
    its saved enrollment progress."""
    from agent.wire.keys import load_or_create_agent_key, thumbprint

    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the agent makes it
    key = load_or_create_agent_key(config.state_dir / "agent-key.pem")
    try:
        progress = json.loads((config.state_dir / "enrollment.json").read_text())
    except (FileNotFoundError, ValueError):
        progress = {"status": "new"}
    return thumbprint(key), progress


@main.command("id")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
def show_id(config_path: Path) -> None:
    """Print this Pi's hostname, hardware id, agent id, key fingerprint and enrollment
    state as JSON: compare the fingerprint with `enrollctl nodes` before approving."""
    from agent.identity import hardware_id
    from agent.wire.keys import fingerprint

    config = _config(config_path)
    agent_id, progress = _identity(config)
    click.echo(json.dumps({"hostname": local_hostname(config) or socket.gethostname(),
                           "hardware_id": hardware_id(config.hardware_id),
                           "agent_id": agent_id,
                           "fingerprint": fingerprint(agent_id), **progress}))


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True)
def announce(config_path: Path) -> None:
    """Write this Pi's avahi service file (avahi_services_dir/swarm-node.service) from its
    config and saved state, and print its path: first boot does it where avahi is present,
    so that the Pi is announced from then on, whether its agent runs or not."""
    from agent.avahi import service_file_name, service_xml, write_atomically
    from agent.identity import architecture, hardware_id
    from agent.wire.errors import WireError
    from agent.wire.mdns import NODE_SERVICE, NodeAd

    config = _config(config_path)
    agent_id, progress = _identity(config)
    hostname = local_hostname(config)
    try:
        ad = NodeAd.parse(hostname, NodeAd(hostname, hardware_id(config.hardware_id), agent_id,
                                           str(progress.get("status", "new")),
                                           str(progress.get("role") or ""),
                                           architecture(config.arch)).txt())
    except WireError as exc:
        raise click.ClickException(f"cannot announce: {exc.message}") from None
    path = config.avahi_services_dir / service_file_name(NODE_SERVICE)
    try:
        write_atomically(path, service_xml(hostname, NODE_SERVICE, 2377, ad.txt()))
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(str(path))
