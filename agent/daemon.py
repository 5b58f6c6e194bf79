"""The agent's daemon (`enroll-agent run`): announce, find a controller, enroll, join, and
then stay to check in, or exit where avahi announces the Pi and the timer checks in.

Modules cannot be unloaded, so once joined the agent execs itself afresh as
`python -m agent.daemon --config PATH`, keeping its pid (systemd's main process): the new
image loads only what a joined agent uses; not click (the CLI), cryptography and joserfc
(the pin check, the grant).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from agent.config import ConfigError, load_config, local_hostname
from agent.logs import setup_logging

log = logging.getLogger("agent")

# Enrollment needs these (the pin check, the grant's signature); a joined agent does not.
ENROLLMENT_ONLY = ("click", "cryptography", "joserfc")
RESTARTED = "ENROLL_AGENT_RESTARTED"  # set for the process that restarted lean: once only


class StartError(Exception):
    """The agent cannot start; the message says why in one line."""


def run(config_path: Path) -> None:
    from agent.checkin import hold_lock, timer_takes_over
    from agent.discovery import ControllerFinder
    from agent.enroll import Agent, Progress
    from agent.responder import Responder, open_responder, uses_avahi
    from agent.supervise import ControllerSupervisor
    from agent.swarm import connect
    from agent.wire.mdns import CONTROLLER_SERVICE, NODE_SERVICE

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise StartError(str(exc)) from None
    setup_logging(config.log_level, config.log_file)
    try:
        lock = hold_lock(config.state_dir, wait=True)  # waits for a check-in under way
    except OSError as exc:
        raise StartError(f"cannot start: {exc}") from None
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
        raise StartError(f"cannot start: {exc}") from None
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
        _restart_lean(config_path)


def _restart_lean(config_path: Path) -> None:
    """exec the daemon alone (its mDNS announcement is taken up by the new image)."""
    log.info("joined: restarting without what enrollment needed, to keep less resident")
    logging.shutdown()
    os.environ[RESTARTED] = "1"
    os.execv(sys.executable, [sys.executable, "-m", "agent.daemon", "--config",
                              str(config_path)])


def main(argv: list[str]) -> int:
    """`python -m agent.daemon --config PATH`: how a joined agent restarts itself."""
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: python -m agent.daemon --config PATH (enroll-agent run starts it)",
              file=sys.stderr)
        return 2
    try:
        run(Path(argv[1]))
    except StartError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
