"""`enroll-agent check`: one short check-in with a controller, then exit.

Where avahi announces this Pi, the agent exits once joined (nothing of it stays resident)
and enroll-agent-check.timer runs this every few minutes instead. It is the resident
loop's own exchange (`Agent.check_in`), so it acts on the answer as the loop would: a
revoked Pi leaves the swarm, a dead controller is skipped for the next one known. When
the Pi must enroll again (its record is gone, it left the swarm, no controller answers),
it starts the resident agent, which finds controllers over mDNS and waits for approval.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from agent.config import AgentConfig
from agent.wire.mdns import CONTROLLER_SERVICE, NODE_SERVICE

if TYPE_CHECKING:
    from agent.avahi import AvahiMDNS
    from agent.enroll import Agent

log = logging.getLogger(__name__)

# Exit statuses (enroll-agent-check.service counts 3 and 4 as success, SuccessExitStatus=)
JOINED = 0  # checked in: in the swarm, and the controller says joined
HANDED_OVER = 3  # the Pi must enroll again: the resident agent was started for it
REVOKED = 4  # revoked: out of the swarm, and not asking again
TEMPFAIL = 75  # this Pi's Docker did not answer: the next check-in tries again (EX_TEMPFAIL)

LOCK_NAME = "agent.lock"


def hold_lock(state_dir: Path, wait: bool) -> IO[bytes] | None:
    """The agent's lock in its state dir, held until the returned file is closed (or the
    process ends); None if another agent holds it and `wait` is False.

    The resident agent holds it for its whole run, so a check-in never works beside it.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    lock = os.fdopen(fd, "rb+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _avahi(config: AgentConfig) -> bool:
    from agent.responder import uses_avahi

    return config.mdns and uses_avahi(config.mdns_via, config.avahi_run_dir)


def timer_takes_over(config: AgentConfig) -> bool:
    """Whether the joined agent may exit: avahi announces for us, and the controller is not
    our child process (`controller_command`: no systemd here, so no timer either)."""
    return not config.controller_command and _avahi(config)


def check(config: AgentConfig) -> int:
    """One check-in; returns the exit status (see above)."""
    lock = hold_lock(config.state_dir, wait=False)
    if lock is None:
        log.info("the resident agent is running: it checks in by itself")
        return JOINED
    with lock:
        return _check(config)


def _check(config: AgentConfig) -> int:
    from agent.enroll import load_progress

    progress = load_progress(config.state_dir)
    if progress.status == "revoked":
        log.info("this Pi was revoked (%s): not asking again",
                 progress.reason or "no reason given")
        return REVOKED
    if progress.status != "joined" or not progress.enrollment:
        return _hand_over(config, f"enrollment is {progress.status}, not joined")

    from agent.discovery import ControllerFinder
    from agent.enroll import Agent, Attempt, Progress

    avahi = _responder(config)

    def announce(progress: Progress) -> None:  # avahi's file says what the agent would
        if avahi is not None:
            avahi.announce(NODE_SERVICE, agent.hostname, 2377, agent.node_ad(progress).txt(),
                           [], agent.hostname)

    finder = ControllerFinder(config.ca_pin or None, config.controller_url)
    try:
        agent = Agent(config, finder, announce)
    except Exception as exc:  # an unreadable state dir, a broken key: say so in one line
        log.error("cannot check in: %s", exc)
        return TEMPFAIL
    known = frozenset(finder.urls())
    outcome, url = agent.check_in()
    if outcome is Attempt.NO_ANSWER and avahi is not None and not config.controller_url:
        avahi.browse_once(CONTROLLER_SERVICE, finder.found)  # the managers of today
        outcome, url = agent.check_in(skip=known)
    if outcome is Attempt.LOCAL:
        return TEMPFAIL
    _ensure_controller(config, agent)
    if agent.progress.status == "revoked":
        return REVOKED
    if outcome is Attempt.ANSWERED and agent.settled:
        log.info("checked in with %s: joined", url)
        return JOINED
    if outcome is Attempt.NO_ANSWER:
        return _hand_over(config, "no controller known answered")
    return _hand_over(config, f"enrollment is {agent.progress.status}, not joined")


def _responder(config: AgentConfig) -> AvahiMDNS | None:
    """avahi, where it announces this Pi; else none (zeroconf is not for a check-in)."""
    if not _avahi(config):
        return None
    from agent.avahi import AvahiMDNS

    return AvahiMDNS(config.avahi_services_dir, keep_on_close=True)


def _ensure_controller(config: AgentConfig, agent: Agent) -> None:
    """Start the controller on a manager, as the resident agent's supervisor would (the
    controller stops by itself once demoted; enroll-controller.timer also ensures it)."""
    from agent.supervise import ControllerSupervisor

    swarm = agent.swarm
    if swarm is not None and swarm.state == "active" and swarm.manager:
        ControllerSupervisor(None, [], config.controller_unit).ensure(True)


def _hand_over(config: AgentConfig, why: str) -> int:
    """The resident agent enrolls this Pi again (it browses mDNS and waits for approval)."""
    from agent.supervise import systemctl

    log.warning("%s: starting the resident agent (%s)", why, config.agent_unit or "none set")
    if config.agent_unit:
        systemctl("start", config.agent_unit)
    return HANDED_OVER
