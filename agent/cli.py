"""`enroll-agent`: the daemon that enrolls this Pi (and `id`, to show who it is)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import click

from agent import __version__
from agent.config import DEFAULT_CONFIG, AgentConfig, ConfigError, load_config, local_hostname
from agent.logs import setup_logging

log = logging.getLogger("agent")

# Enrollment needs these (the pin check, the grant's signature); a joined agent does not.
ENROLLMENT_ONLY = ("cryptography", "joserfc")
RESTARTED = "ENROLL_AGENT_RESTARTED"  # set for the process that restarted lean: once only


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
    from agent.checkin import hold_lock, timer_takes_over
    from agent.discovery import ControllerFinder
    from agent.enroll import Agent, Progress
    from agent.responder import Responder, open_responder, uses_avahi
    from agent.supervise import ControllerSupervisor
    from agent.swarm import connect
    from agent.wire.mdns import CONTROLLER_SERVICE, NODE_SERVICE

    config = _config(config_path)
    setup_logging(config.log_level, config.log_file)
    try:
        lock = hold_lock(config.state_dir, wait=True)  # waits for a check-in under way
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    if config.insecure_tofu and not config.ca_pin:
        log.warning("insecure_tofu is on and no ca_pin is set: the first controller found "
                    "will be trusted. Use this in a lab only.")
    finder = ControllerFinder(config.ca_pin or None, config.controller_url)
    mdns: Responder | None = None
    addresses = [config.advertise_addr] if config.advertise_addr else []
    if config.mdns:
        # the agent's service file stays when it exits: avahi goes on announcing the Pi
        mdns = open_responder(config.mdns_via, addresses, config.avahi_services_dir,
                              config.avahi_run_dir, keep_on_close=True)
    hostname = local_hostname(config)
    # zeroconf needs our address; avahi knows its own
    announcing = bool(addresses) or uses_avahi(config.mdns_via, config.avahi_run_dir)

    def announce(progress: Progress) -> None:
        if mdns is None or not announcing:
            return
        mdns.announce(NODE_SERVICE, hostname, 2377, agent.node_ad(progress).txt(), addresses,
                      hostname)

    try:
        agent = Agent(config, finder, announce)
    except Exception as exc:  # no Docker, unreadable state dir: say so in one line
        raise click.ClickException(f"cannot start: {exc}") from None
    if mdns is not None and not config.controller_url:
        mdns.browse(CONTROLLER_SERVICE, finder.found, finder.gone)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop.set()
        finder.changed.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor = ControllerSupervisor(connect(config.docker_host),  # its own: a thread
                                      list(config.controller_command), config.controller_unit,
                                      config.controller_log)
    supervisor.start()
    # Modules cannot be unloaded: once joined, the agent execs itself, keeping its pid
    # (systemd's main process), and the new image loads only what a joined agent uses.
    # Not while it runs the controller as its child, which would die with it.
    agent.may_restart = lambda: (not os.environ.get(RESTARTED) and not supervisor.running
                                 and any(m in sys.modules for m in ENROLLMENT_ONLY))
    try:
        agent.run(until_joined=timer_takes_over(config))
    finally:
        if not agent.restart:
            supervisor.close()
            if mdns is not None:
                mdns.close()
        lock.close()
    if agent.restart:
        _restart_lean()


def _restart_lean() -> None:
    """exec this very command again (its mDNS announcement is taken up by the new image)."""
    log.info("joined: restarting without what enrollment needed, to keep less resident")
    logging.shutdown()
    os.environ[RESTARTED] = "1"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


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
