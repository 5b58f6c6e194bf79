"""`enroll-controller serve`: one controller of the swarm's, on this manager.

Every manager runs one. They share the state in the swarm's Raft store, each serves the
agent and admin APIs and announces itself, and one at a time (the lease holder) does the
cluster-wide work: the baseline, the quorum keeper, sealing the CA key again after a
manager token rotation. When this node stops being a manager, the controller stops (exit
status 0): a worker carries no controller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from agent import __version__
from agent.logs import setup_logging
from controller.app import create_app
from controller.bootstrap import (
    config_from_docker,
    forget_keys,
    import_single,
    reseal_if_rotated,
    share_ca,
)
from controller.cluster import Actor, Job, Lease, Registry
from controller.config import ControllerConfig, load_config
from controller.discovery import ControllerDiscovery
from controller.dockerapi import connect
from controller.keeper import QuorumKeeper
from controller.memory import limit_arenas, start_trimming
from controller.server import make_server, serve_forever
from controller.state import State
from controller.state.swarm import SwarmBackend
from controller.swarm import Swarm, SwarmError
from controller.viz.server import VizSocket, docker_fetch

log = logging.getLogger("controller")

ROLE_CHECK = 5.0  # seconds between "am I still a manager?"


def serve_on_this_manager(state_dir: Path, log_level: str, docker_host: str, port: int,
                          viz_socket_dir: str, log_file: str) -> None:
    setup_logging(log_level, log_file)
    limit_arenas()  # before any thread allocates
    if (state_dir / "controller.toml").exists():
        config = load_config(state_dir)
        swarm = Swarm(connect(config.docker_host))
    else:
        swarm = Swarm(connect(docker_host))
        config = config_from_docker(state_dir, swarm, {
            "docker_host": docker_host, "port": port, "viz_socket_dir": viz_socket_dir})
    if config.log_file and config.log_file != log_file:
        setup_logging(log_level, config.log_file)
    local = swarm.local()  # SwarmError: not a manager (yet)
    registry: Registry | None = None  # (until it is made, shelves only if in use already)
    backend = SwarmBackend(swarm.api, shelve=lambda: registry is not None
                           and registry.shelves_read_everywhere())
    state = State(backend)
    import_single(config, state)
    share_ca(config, state, swarm)
    registry = Registry(state, local.hostname, config.url)
    registry.heartbeat(force=True)
    app = create_app(config, swarm=swarm, state=state, registry=registry)
    ctl = app.extensions["swarm_enroll"]
    ctl.cluster_id = local.cluster_id  # /healthz tells agents, over the pinned TLS
    server = make_server(app, config)
    viz = None
    if config.viz_socket_dir:  # what viz may read of Docker, instead of the Docker socket
        viz = VizSocket(Path(config.viz_socket_dir), docker_fetch(swarm.api))
        viz.start()
    discovery = ControllerDiscovery(config, ctl.pin, local.cluster_id, ctl.sightings)
    if config.mdns:
        discovery.start()
    actor = Actor(Lease(state, local.hostname), cluster_jobs(config, swarm, app))
    demoted = threading.Event()
    shared = [ctl.enrollment.rules] + ([ctl.baseline.source.version] if ctl.baseline else [])
    watcher = threading.Thread(target=_watch_role,
                               args=(swarm, registry, server, demoted, shared),
                               name="role-watch", daemon=True)
    log.info("swarm-enroll controller %s on %s for swarm %s, CA %s", __version__,
             local.hostname, local.cluster_id[:12], ctl.pin)
    stopping = threading.Event()
    try:
        actor.start()
        watcher.start()
        start_trimming(stopping)
        serve_forever(server)
    finally:
        stopping.set()
        actor.stop()
        discovery.stop()
        if viz is not None:
            viz.stop()
        registry.leave()
        state.close()
    if demoted.is_set() or _demoted_meanwhile(swarm):  # told to stop as it was demoted
        log.warning("this node is no longer a manager: the controller stops")
        forget_keys(config)


def _demoted_meanwhile(swarm: Swarm) -> bool:
    try:
        return not swarm.is_manager()
    except Exception:  # Docker does not answer: unknown, so the keys stay
        return False


def cluster_jobs(config: ControllerConfig, swarm: Swarm, app: Flask) -> list[Job]:
    """The work done for the whole cluster, by the acting controller alone."""
    ctl = app.extensions["swarm_enroll"]
    jobs = [Job("ca-reseal", tick=lambda: reseal_if_rotated(config, ctl.state, swarm)),
            Job("quorum-keeper", tick=QuorumKeeper(swarm, ctl.state, ctl.quorum).step),
            Job("controller-registry", tick=ctl.registry.prune)]
    if ctl.baseline is not None:
        jobs.append(Job("baseline", start=ctl.baseline.start, stop=ctl.baseline.stop))
    return jobs


def _watch_role(swarm: Swarm, registry: Registry, server: object, demoted: threading.Event,
                shared: list[Callable[[], object]]) -> None:
    """Heartbeat in the registry; take an edit of this manager's rules or baseline file
    into the shared state; stop serving once this node is no longer a manager."""
    while True:
        try:
            swarm.local()
        except SwarmError as exc:
            if exc.code == "not_a_manager":
                demoted.set()
                threading.Thread(target=server.stop, daemon=True).start()  # type: ignore
                return
        except Exception:  # the daemon answers strangely: ask again later
            pass
        registry.heartbeat()
        registry.look()  # every few seconds: a change is dated within that
        for read in shared:
            try:
                read()
            except Exception:  # a bad edit is logged where it is read; nothing changes
                log.debug("shared file", exc_info=True)
        threading.Event().wait(ROLE_CHECK)
