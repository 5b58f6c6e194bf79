"""Enrollment decisions: what to do with each agent request, independent of HTTP.

The Flask blueprints only parse and answer; every rule of the lifecycle (seen →
pending → approved → joined → revoked, pending → rejected, replacements, pruning)
lives here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey

from agent.wire.errors import WireError
from agent.wire.jws import SignedRequest, sign_grant
from agent.wire.messages import EnrollmentRequest, Grant, JoinedReport
from controller.rules import Rule, match_rule
from controller.store import Node, Store, new_id
from controller.swarm import Swarm, SwarmError, down_for
from controller.tokens import usable_token

log = logging.getLogger(__name__)

# States an agent can be told about; `seen` exists only for mDNS sightings.
PENDING, APPROVED, JOINED, REJECTED = "pending", "approved", "joined", "rejected"
REVOKED, FORGOTTEN, PRUNED = "revoked", "forgotten", "pruned"
# History only: never matched against a new request.
ARCHIVED = frozenset({"replaced", FORGOTTEN, PRUNED})
DRAIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Answer:
    """What the agent is told: its record's state and, once approved, a grant."""

    node: Node
    grant: str = ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.node.id, "status": self.node.state,
                                "role": self.node.role}
        if self.node.reason:
            body["reason"] = self.node.reason
        if self.grant:
            body["grant"] = self.grant
        return body

    @property
    def http_status(self) -> int:
        return 202 if self.node.state == PENDING else 200


class EnrollmentService:
    def __init__(self, store: Store, swarm: Swarm, ca_key: ECKey,
                 rules: Callable[[], list[Rule]], grant_ttl: int = 600,
                 local_addresses: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.swarm = swarm
        self.ca_key = ca_key
        self.rules = rules
        self.grant_ttl = grant_ttl
        self.local_addresses = local_addresses | {"127.0.0.1", "::1"}
        # One decision per hostname at a time: two requests racing for one name
        # must not both create a record.
        self._lock = threading.Lock()
        # Called (with the node) after the swarm's membership changed: a join, a
        # revocation, a removal. The baseline reconciler listens here.
        self.membership_changed: list[Callable[[Node], None]] = []

    # -- agent requests --------------------------------------------------------

    def enroll(self, signed: SignedRequest, req: EnrollmentRequest, remote_addr: str) -> Answer:
        with self._lock:
            revoked = self.store.revoked_matching(signed.thumbprint, req.hardware_id)
            if revoked is not None:
                return Answer(revoked)
            records = self._active(req.hostname)
            mine = next((n for n in records if n.thumbprint == signed.thumbprint
                         and n.hardware_id == req.hardware_id), None)
            if mine is not None:
                node = self._again(mine, req, signed.thumbprint)
            else:
                node = self._first(signed, req, remote_addr, records)
        return self._answer(node)  # signing the grant needs no lock

    def poll(self, signed: SignedRequest, node_id: str) -> Answer:
        node = self._own(signed, node_id)
        self.store.touch_node(node.id)
        return self._answer(node)

    def joined(self, signed: SignedRequest, node_id: str, report: JoinedReport) -> Answer:
        node = self._own(signed, node_id)
        if node.state == JOINED and node.swarm_node_id == report.node_id:
            return self._answer(node)
        if node.state not in (APPROVED, JOINED):
            raise WireError("not_approved", f"enrollment {node.id} is {node.state}, not approved",
                            409)
        try:
            self.swarm.wait_ready(report.node_id, node.hostname)
            self.swarm.finish_join(report.node_id, node.role, node.labels, node.availability)
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        node = self.store.update_node(
            node.id, f"agent:{signed.thumbprint}", "node.joined", f"swarm node {report.node_id}",
            state=JOINED, swarm_node_id=report.node_id,
        )
        if node.role == "manager":
            log.info("promoted %s to manager", node.hostname)
        log.info("%s joined the swarm as %s (node %s)", node.hostname, node.role, report.node_id)
        self._notify(node)
        return self._answer(node)

    def roles_in_flight(self) -> dict[str, str]:
        """Hostname (lower case) -> role, for Pis granted but not yet through `joined`:
        such a Pi joins as a worker and is promoted only then, so until it reports, its
        swarm node's role is not the one it will have."""
        return {n.hostname.lower(): n.role for n in self.store.nodes_in_state(APPROVED)}

    def _notify(self, node: Node) -> None:
        for listener in self.membership_changed:
            try:
                listener(node)
            except Exception:  # a listener's failure must not fail the agent's request
                log.exception("membership listener failed for %s", node.hostname)

    # -- admin decisions -------------------------------------------------------

    def approve(self, node_id: str, actor: str, reason: str = "") -> Node:
        node = self._get(node_id)
        if node.state != PENDING:
            raise WireError("not_pending", f"{node.hostname} is {node.state}; only pending "
                            "requests can be approved", 409)
        approved = self._approve(node, actor, reason)
        assert approved is not None
        log.info("%s approved as %s by %s", node.hostname, approved.role, actor)
        return approved

    def reject(self, node_id: str, actor: str, reason: str = "") -> Node:
        node = self._get(node_id)
        if node.state not in (PENDING, APPROVED):
            raise WireError("not_pending", f"{node.hostname} is {node.state}; only pending or "
                            "approved requests can be rejected", 409)
        log.info("%s rejected by %s", node.hostname, actor)
        return self.store.update_node(node.id, actor, "node.reject", reason, state=REJECTED,
                                      reason=reason or f"rejected by {actor}")

    def revoke(self, node_id: str, actor: str, reason: str = "") -> Node:
        """Drain, wait (bounded) for its tasks to move, remove it, rotate the worker token."""
        node = self._get(node_id)
        if node.state not in (APPROVED, JOINED):
            raise WireError("not_revocable", f"{node.hostname} is {node.state}; only approved "
                            "or joined nodes can be revoked", 409)
        try:
            attrs = self.swarm.node(node.swarm_node_id) if node.swarm_node_id else None
            if attrs is not None:
                if attrs["Spec"].get("Role") == "manager":
                    self.swarm.check_can_remove_manager()
                services = self.swarm.services_on(node.swarm_node_id)
                self.swarm.drain(node.swarm_node_id)
                deadline = time.monotonic() + DRAIN_TIMEOUT
                while (not self.swarm.tasks_moved(node.swarm_node_id, services)
                       and time.monotonic() < deadline):
                    time.sleep(1)
                self.swarm.remove(attrs)
            self.swarm.rotate_worker_token()
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        node = self.store.update_node(node.id, actor, "node.revoke", reason, state=REVOKED,
                                      reason=reason or f"revoked by {actor}")
        log.warning("%s revoked by %s; worker join token rotated", node.hostname, actor)
        self._notify(node)
        return node

    def forget(self, node_id: str, actor: str, reason: str = "") -> Node:
        """Let a revoked or rejected Pi ask again; the record stays in the history."""
        node = self._get(node_id)
        if node.state not in (REVOKED, REJECTED):
            raise WireError("not_forgettable", f"{node.hostname} is {node.state}; only revoked "
                            "or rejected records can be forgotten", 409)
        return self.store.update_node(node.id, actor, "node.forget", reason, state=FORGOTTEN)

    def prune(self, actor: str, older_than: float) -> list[dict[str, Any]]:
        """Remove swarm nodes Down for longer than `older_than` seconds (never a Ready one)."""
        removed = []
        try:
            for attrs in self.swarm.nodes():
                if attrs["Status"]["State"] != "down" or down_for(attrs) < older_than:
                    continue
                self.swarm.remove(attrs)
                hostname = attrs.get("Description", {}).get("Hostname", "")
                removed.append({"swarm_node_id": attrs["ID"], "hostname": hostname})
                for node in self._active(hostname):
                    if node.swarm_node_id == attrs["ID"]:
                        self.store.update_node(node.id, actor, "node.prune",
                                               "Down for too long", state=PRUNED)
                if not self._active(hostname):
                    self.store.audit(actor, "node.prune", None, f"swarm node {attrs['ID']} "
                                     f"({hostname}) Down for too long")
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        return removed

    # -- internals -------------------------------------------------------------

    def _live(self, hostname: str) -> bool:
        try:
            return any(a["Status"]["State"] == "ready"
                       for a in self.swarm.nodes_named(hostname))
        except SwarmError:
            return False

    def _active(self, hostname: str) -> list[Node]:
        return [n for n in self.store.nodes_by_hostname(hostname) if n.state not in ARCHIVED]

    def _approve(self, node: Node, actor: str, why: str, token_id: str = "") -> Node | None:
        """Approve; for a replacement, first clear the stale swarm node and carry over its
        role, labels and availability. None if the token was spent meanwhile."""
        carried: dict[str, Any] = {}
        archive: tuple[str, ...] = ()
        if node.kind == "replacement":
            carried, archive = self._take_over(node)
        return self.store.approve(node.id, actor, why, token_id=token_id, archive=archive,
                                  **carried)

    def _take_over(self, node: Node) -> tuple[dict[str, Any], tuple[str, ...]]:
        old = [n for n in self._active(node.hostname) if n.id != node.id]
        try:
            stale = self.swarm.nodes_named(node.hostname)
            if any(a["Spec"].get("Role") == "manager" for a in stale):
                # Before the Ready check: without a quorum, node states are frozen.
                self.swarm.check_can_remove_manager()
            live = [a for a in stale if a["Status"]["State"] == "ready"]
            if live:
                raise WireError("hostname_in_use", (
                    f"{node.hostname} is still a Ready swarm node ({live[0]['ID']}): the old "
                    "Pi is alive. Shut it down (or 'enrollctl nodes revoke "
                    f"{node.hostname}') before approving its replacement."), 409)
            labels: dict[str, str] = {}
            role = ""
            for attrs in stale:
                labels.update(attrs["Spec"].get("Labels") or {})
                role = "manager" if attrs["Spec"].get("Role") == "manager" else role or "worker"
                self.swarm.remove(attrs)
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        previous = old[-1] if old else None
        carried: dict[str, Any] = {"labels": {**node.labels, **labels}}
        if previous is not None:
            carried["labels"] = {**carried["labels"], **previous.labels}
            carried["role"] = previous.role
            carried["availability"] = previous.availability
        if role:
            carried["role"] = role
        if stale:
            log.info("removed %d stale swarm node(s) named %s", len(stale), node.hostname)
        return carried, tuple(n.id for n in old)

    def _get(self, node_id: str) -> Node:
        node = self.store.get_node(node_id)
        if node is None:
            raise WireError("not_found", f"no node record {node_id!r}", 404)
        return node

    def _own(self, signed: SignedRequest, node_id: str) -> Node:
        node = self.store.get_node(node_id)
        # Same answer for "no such record" and "not yours": ids are not to be probed.
        if node is None or node.thumbprint != signed.thumbprint:
            raise WireError("not_found", f"no enrollment {node_id!r} for this agent key", 404)
        return node

    def _again(self, node: Node, req: EnrollmentRequest, thumbprint: str) -> Node:
        """The same Pi (hardware id and key) asking again: restart, re-join, or waiting."""
        self.store.touch_node(node.id, addresses=req.addresses, agent_version=req.agent_version,
                              docker_version=req.docker_version)
        if node.state == PENDING and req.bootstrap_token:
            node = self._try_token(node, req, thumbprint)
        elif node.state == JOINED and req.swarm.state != "active":
            # Same key, same hardware, no longer in the swarm: the approval still stands.
            node = self.store.update_node(node.id, f"agent:{thumbprint}", "node.rejoin",
                                          "the Pi left the swarm; re-granted", state=APPROVED)
        return node

    def _first(self, signed: SignedRequest, req: EnrollmentRequest, remote_addr: str,
               records: list[Node]) -> Node:
        actor = f"agent:{signed.thumbprint}"
        rule = match_rule(self.rules(), req.hostname)
        node = Node(
            id=new_id("enr"), hostname=req.hostname, hardware_id=req.hardware_id,
            thumbprint=signed.thumbprint, public_jwk=_jwk_text(signed.jwk), state=PENDING,
            role=rule.role if rule else "worker", labels=dict(rule.labels) if rule else {},
            availability=rule.availability if rule else "active",
            approve=rule.approve if rule else "manual", arch=req.arch, model=req.model,
            addresses=req.addresses, docker_version=req.docker_version,
            agent_version=req.agent_version,
        )
        if self._is_local_manager(req, remote_addr):
            node.state, node.role = JOINED, "manager"
            node.swarm_node_id = req.swarm.node_id
            self.store.create_node(node, actor, "node.adopt",
                                   "the controller's own manager node")
            return node
        if rule is None:
            node.state = REJECTED
            node.reason = f"no hostname rule matches {req.hostname!r}"
            log.warning("rejected %s: %s", req.hostname, node.reason)
            self.store.create_node(node, actor, "node.reject", node.reason)
            return node
        if records:
            node.kind = "replacement"
            node.reason = (f"hostname {req.hostname!r} already belongs to hardware "
                           f"{records[-1].hardware_id}; approve to replace it")
            if self._live(req.hostname):
                node.reason = (f"hostname {req.hostname!r} belongs to a live swarm node on "
                               f"hardware {records[-1].hardware_id}: held; it can only be "
                               "approved once the old Pi is gone")
            self.store.create_node(node, actor, "node.request", node.reason)
            if rule.approve == "token" and req.bootstrap_token:
                node = self._try_token(node, req, signed.thumbprint)
            return node
        self.store.create_node(node, actor, "node.request", f"rule {rule.match!r}")
        if rule.approve == "auto":
            log.warning("auto-approving %s as %s (rule %r): fine in a lab, not on a shared LAN",
                        node.hostname, node.role, rule.match)
            node = self.store.update_node(node.id, "controller", "node.approve",
                                          f"rule {rule.match!r} approves automatically",
                                          state=APPROVED)
        elif rule.approve == "token" and req.bootstrap_token:
            node = self._try_token(node, req, signed.thumbprint)
        return node

    def _try_token(self, node: Node, req: EnrollmentRequest, thumbprint: str) -> Node:
        if node.approve != "token":
            return node
        token = usable_token(self.store, req.bootstrap_token, req.hostname)
        if token is None:
            self.store.audit(f"agent:{thumbprint}", "token.refused", node,
                             "bootstrap token unknown, expired, spent, revoked or not for this "
                             "hostname")
            return node
        try:
            approved = self._approve(node, f"token:{token.id}", "valid bootstrap token",
                                     token_id=token.id)
        except WireError as exc:  # a replacement whose old node is still alive: held
            held = f"held: {exc.message}"
            if node.reason == held:
                return node
            return self.store.update_node(node.id, "controller", "node.held", held,
                                          reason=held)
        return approved or node

    def _is_local_manager(self, req: EnrollmentRequest, remote_addr: str) -> bool:
        """The agent on the controller's own Pi: its daemon is this manager, seen locally."""
        if remote_addr not in self.local_addresses or not req.swarm.node_id:
            return False
        try:
            local = self.swarm.local()
        except SwarmError:
            return False
        return (req.swarm.node_id == local.node_id
                and req.hostname.lower() == local.hostname.lower())

    def _answer(self, node: Node) -> Answer:
        if node.state != APPROVED:
            return Answer(node)
        return Answer(node, self._grant(node))

    def _grant(self, node: Node) -> str:
        try:
            facts = self.swarm.join_facts()
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        now = int(time.time())
        grant = Grant(
            hostname=node.hostname, agent=node.thumbprint, role=node.role,
            join_token=facts.worker_token,  # managers are promoted after joining
            managers=facts.managers, labels=node.labels, cluster=facts.cluster_id,
            enrollment=node.id, iat=now, exp=now + self.grant_ttl,
        )
        return sign_grant(self.ca_key, grant)


def _jwk_text(jwk: dict[str, str]) -> str:
    return json.dumps(jwk, sort_keys=True)
