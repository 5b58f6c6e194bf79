"""The enrollment loop: find a controller, ask, wait, verify the grant, join, report.

Every step is safe to repeat, so a restart (or a reboot half way) simply runs
the loop again: the controller recognises the same key and hardware id, and a
Pi already in the swarm only reports itself.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.client import ControllerClient, Unreachable
from agent.config import AgentConfig, local_hostname
from agent.discovery import ControllerFinder
from agent.identity import architecture, board_model, hardware_id
from agent.swarm import DockerError, JoinError, connect, docker_version, join, leave, local_state
from agent.wire.adoption import SECRET_FILE, local_proof
from agent.wire.errors import WireError
from agent.wire.keys import fingerprint, load_or_create_agent_key, thumbprint, write_private
from agent.wire.mdns import NodeAd
from agent.wire.messages import EnrollmentRequest, SwarmState, validate_controller_urls

log = logging.getLogger(__name__)

REJECTED_POLL = 300.0
DOCKER_START_WAIT = 60.0  # at boot the agent starts beside Docker, not after it
PROGRESS_FILE = "enrollment.json"  # in the state dir


class ForeignSwarm(Exception):
    """This Pi's Docker is in a swarm that is not the controller's: a person must act.

    The agent says so and asks again later (it never exits on it), so that it carries on
    by itself once the Pi has left that swarm.
    """


@dataclass
class Progress:
    """What the agent remembers between runs (state_dir/enrollment.json)."""

    enrollment: str = ""
    status: str = "new"
    role: str = ""
    cluster: str = ""
    node_id: str = ""
    reason: str = ""
    controllers: list[str] = field(default_factory=list)  # to fail over to, this boot or next


def load_progress(state_dir: Path) -> Progress:
    try:
        return Progress(**json.loads((state_dir / PROGRESS_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return Progress()


class Attempt(enum.Enum):
    """How one exchange with a controller went, for the caller to fail over or not."""

    ANSWERED = "answered"  # the controller answered (an error answer included)
    NO_ANSWER = "no answer"  # unreachable, or not a controller of our CA: try the next
    LOCAL = "local failure"  # this Pi's Docker failed: no other controller helps


class Agent:
    def __init__(self, config: AgentConfig, finder: ControllerFinder,
                 announce: Any = None) -> None:
        self.config = config
        self.finder = finder
        self.announce = announce or (lambda progress: None)
        self.state_dir = config.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key = load_or_create_agent_key(self.state_dir / "agent-key.pem")
        self.thumbprint = thumbprint(self.key)
        self.hostname = local_hostname(config)
        self.hardware_id = hardware_id(config.hardware_id)
        self.local_proof = self._local_proof()
        self.docker = connect(config.docker_host)
        self.progress = load_progress(self.state_dir)
        self.swarm: SwarmState | None = None  # what this Pi's Docker said last
        self.finder.learn(self.progress.controllers)
        self.stop = threading.Event()
        # Once joined, may the agent end run() so that its process starts afresh, without
        # what enrollment loaded (the caller decides; see agent.cli). `restart` says it did.
        self.may_restart: Any = lambda: False
        self.restart = False
        self._delay = 1.0
        self._said_hello = False  # each run starts with a full request, not a poll
        self._last_answer: tuple[str, str] = ("", "")  # each run logs its first answer
        self._last_foreign = ""  # a foreign swarm is logged once, until it changes

    def _local_proof(self) -> str:
        """On a controller's own Pi, proof of it (agent/wire/adoption.py); else ''."""
        try:
            secret = (self.config.controller_dir / SECRET_FILE).read_bytes()
        except OSError:
            return ""
        return local_proof(secret, self.thumbprint)

    # -- persistence ---------------------------------------------------------

    @property
    def _progress_file(self) -> Path:
        return self.state_dir / PROGRESS_FILE

    @property
    def _ca_file(self) -> Path:
        return self.state_dir / "ca.pem"

    def _save(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.progress, key, value)
        write_private(self._progress_file, json.dumps(asdict(self.progress)).encode())
        self.announce(self.progress)

    # -- the loop ------------------------------------------------------------

    def run(self, until_joined: bool = False) -> None:
        """Enroll, then keep checking in; with `until_joined`, return once this Pi is in
        the swarm and the controller says joined (a timer checks in from then on)."""
        log.info("agent %s for %s (hardware %s, key fingerprint %s)", __version__,
                 self.hostname, self.hardware_id, fingerprint(self.thumbprint))
        self.announce(self.progress)
        while not self.stop.is_set():
            urls = self.finder.urls()
            if not urls:
                log.info("waiting for a controller with our CA to appear over mDNS")
                self.finder.changed.wait(timeout=self._backoff())
                self.finder.changed.clear()
                continue
            wait = self.attempt(urls[0])[1]
            if self.progress.status == "revoked":
                log.error("this Pi was revoked (%s): not asking again. An admin can run "
                          "'enrollctl nodes forget %s'; then restart this agent.",
                          self.progress.reason or "no reason given", self.hostname)
                self.stop.wait()
                return
            if until_joined and self.settled:
                log.info("joined: enroll-agent-check.timer checks in from now on; exiting")
                return
            if self.progress.status == "joined" and self.may_restart():
                self.restart = True
                return
            self.stop.wait(wait)

    @property
    def settled(self) -> bool:
        """In the swarm as the node the controller knows: nothing left but checking in."""
        return self.progress.status == "joined" and self.swarm is not None \
            and self.swarm.state == "active" and self.swarm.node_id == self.progress.node_id

    def attempt(self, url: str) -> tuple[Attempt, float]:
        """One exchange with `url`, its failures logged and handled: how it went, and how
        long to wait before the next."""
        try:
            return Attempt.ANSWERED, self._step(url)
        except Unreachable as exc:
            log.warning("controller unreachable (%s); trying the next one", exc)
            self.finder.rotate()
            return Attempt.NO_ANSWER, self._backoff()
        except DockerError as exc:  # the Pi's own daemon
            log.error("cannot use Docker: %s", exc)
            return Attempt.LOCAL, self._backoff()
        except ForeignSwarm as exc:
            if str(exc) != self._last_foreign:
                self._last_foreign = str(exc)
                log.error("%s", exc)
            return Attempt.ANSWERED, self._backoff()
        except WireError as exc:
            log.error("%s: %s", exc.code, exc.message)
            if exc.code == "not_found":  # the controller lost our record: ask again
                self._save(enrollment="", status="new")
            wait = max(self._backoff(), float(exc.retry_after))
            if exc.code in ("pin_mismatch", "tls_failed", "unreachable"):
                self.finder.rotate()  # anyone can announce our pin: try the next one
                return Attempt.NO_ANSWER, wait
            return Attempt.ANSWERED, wait

    def check_in(self, skip: frozenset[str] = frozenset()) -> tuple[Attempt, str]:
        """One exchange, failing over through every controller known (but `skip`) until
        one answers (what `enroll-agent check` does): how it went, and with which one."""
        self._said_hello = True  # a poll will do: the controller knows us
        for url in self.finder.urls():
            if url in skip:
                continue
            outcome = self.attempt(url)[0]
            if outcome is not Attempt.NO_ANSWER:
                return outcome, url
        return Attempt.NO_ANSWER, ""

    def node_ad(self, progress: Progress) -> NodeAd:
        """What mDNS says of this Pi (never a secret)."""
        return NodeAd(self.hostname, self.hardware_id, self.thumbprint, progress.status,
                      progress.role, architecture(self.config.arch))

    def _backoff(self) -> float:
        """Exponential backoff with jitter, so a fleet powering up does not stampede."""
        delay = self._delay
        self._delay = min(self._delay * 1.6, self.config.poll_max_seconds)
        return delay * random.uniform(0.8, 1.2)

    def _client(self, url: str) -> ControllerClient:
        """The first time, the connection that passed the pin check carries the first
        request; from then on, verified TLS against the saved CA."""
        if self._ca_file.exists():
            return ControllerClient(url, self._ca_file, self.key)
        pin = self.config.ca_pin or None
        if pin is None:
            log.warning("insecure_tofu: trusting the CA of the first controller, %s", url)
        from agent.wire.pinning import connect_pinned  # cryptography: not for a joined agent

        tls, pem, learned = connect_pinned(url, pin)
        try:
            write_private(self._ca_file, pem)
        except BaseException:
            tls.close()
            raise
        if pin is None:
            log.warning("insecure_tofu: pinned CA %s from now on", learned)
            self.finder.pin = learned
        return ControllerClient(url, self._ca_file, self.key, sock=tls)

    def _request(self, swarm: SwarmState) -> dict[str, Any]:
        return EnrollmentRequest(
            hostname=self.hostname, hardware_id=self.hardware_id,
            arch=architecture(self.config.arch), model=board_model(self.config.model),
            addresses=[self.config.advertise_addr] if self.config.advertise_addr else [],
            docker_version=docker_version(self.docker), agent_version=__version__,
            bootstrap_token=self.config.bootstrap_token, swarm=swarm,
            local_proof=self.local_proof,
        ).to_json()

    def _step(self, url: str) -> float:
        """One exchange with the controller; returns how long to wait before the next."""
        client = self._client(url)
        try:
            self.swarm = swarm = self._docker_state(client)
            self._check_foreign_swarm(swarm, client)
            self._last_foreign = ""
            left = self.progress.status == "joined" and swarm.state != "active"
            # While waiting, the full request is sent again: it carries the token, which
            # approves a held replacement as soon as the old Pi is gone.
            waiting = self.progress.status in ("new", "pending")
            if not self._said_hello or not self.progress.enrollment or left or waiting:
                if left:
                    log.warning("this Pi is no longer in the swarm; asking to rejoin")
                answer = client.enroll(self._request(swarm))
                self._said_hello = True
            else:
                answer = client.poll(self.progress.enrollment)
            return self._handle(client, answer, swarm)
        finally:
            client.close()

    def _docker_state(self, client: ControllerClient) -> SwarmState:
        """This Pi's swarm state, read from Docker: never guessed, so the request waits
        for it. Docker may still be starting (at boot the agent starts beside it, see
        enroll-agent.service): meanwhile the nonce is fetched, and Docker is asked every
        0.05 s, up to DOCKER_START_WAIT. A joined Pi's check-in does not wait: it fails
        at once and the next one asks again."""
        try:
            return local_state(self.docker)
        except DockerError:
            if self.progress.status == "joined":
                raise
            client.prefetch_nonce()
        deadline = time.monotonic() + DOCKER_START_WAIT
        while True:
            try:
                return local_state(self.docker)
            except DockerError:
                if time.monotonic() > deadline or self.stop.wait(0.05):
                    raise

    def _check_foreign_swarm(self, swarm: SwarmState, client: ControllerClient) -> None:
        """Refuse to act for a swarm other than the controller's, as the controller says."""
        if swarm.state != "active":
            return
        ours = self.progress.node_id == swarm.node_id and self.progress.status == "joined"
        if ours and not swarm.manager:
            return
        cluster = client.cluster()
        same = bool(cluster) and swarm.cluster_id.startswith(cluster)
        if not ours and not same and not swarm.manager:
            raise ForeignSwarm(
                f"this Docker daemon is already in a swarm (node {swarm.node_id}) that "
                "swarm-enroll did not join; run 'docker swarm leave' on this Pi (the agent "
                "asks again by itself)"
            )
        if swarm.manager and cluster and not same:
            raise ForeignSwarm(
                f"this Docker daemon manages another swarm ({swarm.cluster_id[:12]}, not "
                f"the controller's {cluster}); swarm-enroll will not move a manager between "
                "swarms"
            )

    def _learn_controllers(self, urls: Any) -> None:
        """Every controller's URL, from an answer over our pinned TLS: kept (and saved) so
        that the agent moves to another one when this one stops answering."""
        try:
            urls = validate_controller_urls(urls)
        except WireError:
            log.warning("ignoring a controller list that is not a list of https:// URLs")
            return
        if urls and self.finder.learn(urls):
            self._save(controllers=urls)
            log.info("controllers of this swarm: %s", ", ".join(urls))

    def _handle(self, client: ControllerClient, answer: dict[str, Any],
                swarm: SwarmState) -> float:
        self.swarm = swarm
        status = answer.get("status", "")
        enrollment = answer.get("id", self.progress.enrollment)
        self._learn_controllers(answer.get("controllers", []))
        if (status, enrollment) != self._last_answer:
            self._last_answer = (status, enrollment)
            log.info("enrollment %s: %s%s", enrollment, status,
                     f" ({answer['reason']})" if answer.get("reason") else "")
        if status == "pending":
            self._save(enrollment=enrollment, status="pending", role=answer.get("role", ""))
            return self._backoff()
        if status == "revoked":
            # also when removed by the manager already: Docker may still hold the swarm
            if swarm.state not in ("inactive", ""):
                log.warning("this Pi was revoked: leaving the swarm")
                leave(self.docker)
            self._save(enrollment=enrollment, status="revoked", reason=answer.get("reason", ""))
            return 0.0
        if status == "rejected":
            self._save(enrollment=enrollment, status="rejected", reason=answer.get("reason", ""))
            return REJECTED_POLL
        if status == "joined":
            self._delay = 1.0
            self._save(enrollment=enrollment, status="joined", role=answer.get("role", ""),
                       node_id=swarm.node_id or self.progress.node_id)
            return self.config.idle_poll_seconds * random.uniform(0.8, 1.2)
        if status == "approved" and answer.get("grant"):
            self._save(enrollment=enrollment, status="approved", role=answer.get("role", ""))
            return self._join(client, answer["grant"], swarm)
        raise WireError("bad_answer", f"unexpected answer status {status!r}", 502)

    def _join(self, client: ControllerClient, token: str, swarm: SwarmState) -> float:
        from agent.wire.jws import verify_grant  # joserfc: not for a joined agent
        from agent.wire.keys import ca_public_key

        ca_key = ca_public_key(self._ca_file.read_bytes())
        grant = verify_grant(token, ca_key, self.thumbprint, self.hostname)
        node_id = swarm.node_id if swarm.state == "active" else ""
        if not node_id and swarm.state not in ("inactive", ""):
            # an earlier join still trying (Docker goes on in the background after its
            # timeout), maybe through a manager that has died since: start over
            log.warning("an earlier join did not finish (%s); leaving it to join again",
                        swarm.state)
            leave(self.docker)
        if not node_id:
            log.info("joining swarm %s via %s as worker", grant.cluster[:12],
                     ", ".join(grant.managers))
            try:
                node_id = join(self.docker, grant, self.config.advertise_addr)
            except JoinError as exc:
                log.error("docker swarm join failed: %s", exc)
                return self._backoff()
        self._save(cluster=grant.cluster, node_id=node_id)
        answer = client.joined(self.progress.enrollment, node_id)
        return self._handle(client, answer, local_state(self.docker))
