"""Enrollment decisions: what to do with each agent request, independent of HTTP.

The Flask blueprints only parse and answer; every rule of the lifecycle (seen →
pending → approved → joined → revoked, pending → rejected, replacements, pruning)
lives here. Each decision is a change of one hostname's document in the shared state,
written under its version: two requests (or two controllers) racing for one name end in
exactly one outcome, since the second one's write is refused and it decides again on
what the first one wrote. Work on the swarm (removing a stale node, promoting) happens
before that write, never inside it, since a change may run more than once.

Memory may be behind another controller's decision (an admin rejected or revoked the
record there a moment ago). So a grant is signed, and a Pi promoted, only on the store's
copy of its document, read then; except for the record this very request has just
written under its version (the enrollment storm's hot path costs no extra read).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from joserfc.jwk import ECKey

from agent.wire.adoption import proof_holds
from agent.wire.errors import WireError
from agent.wire.jws import SignedRequest, sign_grant
from agent.wire.messages import MAX_CONTROLLERS, EnrollmentRequest, Grant, JoinedReport
from controller.config import Limits
from controller.keeper import inherited
from controller.rules import Rule, match_rule
from controller.state import (
    APPROVED,
    ARCHIVED,
    FORGOTTEN,
    JOINED,
    PENDING,
    PRUNED,
    REJECTED,
    REPLACED,
    REVOKED,
    HostDoc,
    Record,
    State,
    Token,
    Unchanged,
    new_id,
)
from controller.state.model import host_key
from controller.swarm import Swarm, SwarmError, down_for
from controller.tokens import usable_token

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 60.0
REFUSAL_QUIET = 60.0  # a repeated token refusal is counted at most this often
FACTS_QUIET = 60.0  # new facts of a record no admin approved are written at most this often
RETRY_AFTER = 60  # seconds, when a limit is reached


@dataclass(frozen=True)
class Answer:
    """What the agent is told: its record's state and, once approved, a grant."""

    node: Record
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


def too_many(what: str, limit: int, key: str) -> WireError:
    return WireError("too_many_requests", f"{what} (the limit is {limit}, {key} in "
                     "controller.toml); an admin can approve or reject waiting requests, or "
                     "ask again later", 429, {"limit": limit, "setting": key},
                     retry_after=RETRY_AFTER)


@dataclass
class _Claim:
    """The outcome of one request's write: the record, and whether this request made it."""

    record: Record
    created: bool = False
    token_used: bool = False
    refused: list[str] = field(default_factory=list)


class EnrollmentService:
    def __init__(self, state: State, swarm: Swarm, ca_key: ECKey,
                 rules: Callable[[], list[Rule]], grant_ttl: int = 600,
                 adoption_secret: bytes = b"", limits: Limits | None = None,
                 controller_urls: Callable[[], list[str]] = list) -> None:
        self.state = state
        self.swarm = swarm
        self.ca_key = ca_key
        self.rules = rules
        self.grant_ttl = grant_ttl
        self.adoption_secret = adoption_secret
        self.limits = limits or Limits()
        self.controller_urls = controller_urls  # every controller's URL, this one first
        self._room = threading.Lock()
        self._taken: Counter[str] = Counter()  # source -> waiting requests being written
        # Called (with the record) after the swarm's membership changed: a join, a
        # revocation, a removal. The baseline reconciler listens here.
        self.membership_changed: list[Callable[[Record], None]] = []

    # -- agent requests --------------------------------------------------------

    def enroll(self, signed: SignedRequest, req: EnrollmentRequest, remote_addr: str) -> Answer:
        revoked = self.state.revoked_matching(signed.thumbprint, req.hardware_id)
        if revoked is not None:
            return Answer(revoked)
        mine = self.state.host(req.hostname).mine(signed.thumbprint, req.hardware_id)
        if mine is not None:
            return self._answer(self._again(mine, req, signed.thumbprint))
        adopt = self._adoptable(signed, req)
        rule = match_rule(self.rules(), req.hostname)
        if rule is None and adopt:  # the controller's own Pi needs no rule
            rule = Rule(match=req.hostname, role="manager")
        if rule is None:  # refused without a record: a stranger's made-up names cost nothing
            log.info("refused %s from %s: no hostname rule matches", req.hostname, remote_addr)
            return Answer(Record("", req.hostname, req.hardware_id, signed.thumbprint, "",
                                 REJECTED, "worker",
                                 reason=f"no hostname rule matches {req.hostname!r}"))
        token_id = ""
        if rule.approve == "token" and req.bootstrap_token and not adopt and \
                not self.state.host(req.hostname).active():
            token = usable_token(self.state, req.bootstrap_token, req.hostname)
            if token is not None and self.state.spend_token(token.id):
                token_id = token.id
        waits = not (token_id or adopt or rule.approve == "auto")
        with self._room_for(remote_addr) if waits else contextlib.nullcontext():
            claim = self.state.update_host(req.hostname, lambda doc: self._claim(
                doc, signed, req, remote_addr, rule, adopt, token_id))
        if token_id and not claim.token_used:
            self.state.refund_token(token_id)  # another request of this Pi came first
        record = claim.record
        if claim.created and record.state == PENDING and rule.approve == "token" \
                and req.bootstrap_token:
            record = self._try_token(record, req, signed.thumbprint)
        return self._answer(record, written=claim.created)

    def poll(self, signed: SignedRequest, node_id: str) -> Answer:
        record = self._own(signed, node_id)
        if self.state.seen(record):
            record = self._write_seen(record)
        return self._answer(record)

    def joined(self, signed: SignedRequest, node_id: str, report: JoinedReport) -> Answer:
        record = self._own(signed, node_id)
        if record.state == JOINED and record.swarm_node_id == report.node_id:
            return self._answer(record)
        record = self._stored(record)  # finish_join may promote it to manager
        if record.state not in (APPROVED, JOINED):
            raise WireError("not_approved", f"enrollment {record.id} is {record.state}, not "
                            "approved", 409)
        ghost = record.swarm_node_id if record.swarm_node_id != report.node_id else ""
        try:
            self.swarm.wait_ready(report.node_id, record.hostname)
            self.swarm.finish_join(report.node_id, record.role, record.labels,
                                   record.availability)
            removed = self._remove_ghost(ghost) if ghost else ""
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None

        def mark(doc: HostDoc) -> Record:
            current = self._in(doc, record.id)
            if current.state not in (APPROVED, JOINED):
                raise WireError("not_approved", f"enrollment {record.id} is {current.state}",
                                409)
            why = f"swarm node {report.node_id}" + (f"; {removed}" if removed else "")
            return doc.change(current, f"agent:{signed.thumbprint}", "node.joined", why,
                              state=JOINED, swarm_node_id=report.node_id)

        record = self.state.update_host(record.hostname, mark)
        if record.role == "manager":
            log.info("promoted %s to manager", record.hostname)
        log.info("%s joined the swarm as %s (node %s)", record.hostname, record.role,
                 report.node_id)
        self._notify(record)
        return self._answer(record)

    def _remove_ghost(self, old_node_id: str) -> str:
        """The same Pi rejoined under a new node id (its Docker state was wiped): its old
        node would stay Down in `docker node ls` for ever. Removed now that the new one is
        Ready (a manager is demoted first, if quorum allows)."""
        attrs = self.swarm.node(old_node_id)
        if attrs is None or attrs["Status"]["State"] == "ready":
            return ""
        self.swarm.remove(attrs)
        log.info("removed swarm node %s, left behind when this Pi rejoined", old_node_id)
        return f"removed its old swarm node {old_node_id}"

    def roles_in_flight(self) -> dict[str, str]:
        """Hostname (lower case) -> role, for Pis granted but not yet through `joined`:
        such a Pi joins as a worker and is promoted only then, so until it reports, its
        swarm node's role is not the one it will have."""
        return {r.hostname.lower(): r.role for r in self.state.in_state(APPROVED)}

    def _notify(self, record: Record) -> None:
        for listener in self.membership_changed:
            try:
                listener(record)
            except Exception:  # a listener's failure must not fail the agent's request
                log.exception("membership listener failed for %s", record.hostname)

    # -- admin decisions -------------------------------------------------------

    def approve(self, node_id: str, actor: str, reason: str = "") -> Record:
        record = self._get(node_id)
        if record.state != PENDING:
            raise WireError("not_pending", f"{record.hostname} is {record.state}; only "
                            "pending requests can be approved", 409)
        approved = self._approve(record, actor, reason)
        if approved is None:
            raise WireError("not_pending", f"{record.hostname} changed meanwhile; look again",
                            409)
        log.info("%s approved as %s by %s", record.hostname, approved.role, actor)
        return approved

    def reject(self, node_id: str, actor: str, reason: str = "") -> Record:
        record = self._decide(node_id, (PENDING, APPROVED), "not_pending",
                              "only pending or approved requests can be rejected", actor,
                              "node.reject", reason, state=REJECTED,
                              reason=reason or f"rejected by {actor}")
        log.info("%s rejected by %s", record.hostname, actor)
        return record

    def revoke(self, node_id: str, actor: str, reason: str = "") -> Record:
        """Drain, wait (bounded) for its tasks to move, remove it, rotate the worker token."""
        record = self._get(node_id)
        if record.state not in (APPROVED, JOINED):
            raise WireError("not_revocable", f"{record.hostname} is {record.state}; only "
                            "approved or joined nodes can be revoked", 409)
        try:
            attrs = self.swarm.node(record.swarm_node_id) if record.swarm_node_id else None
            if attrs is not None:
                if attrs["Spec"].get("Role") == "manager":
                    self.swarm.check_can_remove_manager()
                services = self.swarm.services_on(record.swarm_node_id)
                self.swarm.drain(record.swarm_node_id)
                deadline = time.monotonic() + DRAIN_TIMEOUT
                while (not self.swarm.tasks_moved(record.swarm_node_id, services)
                       and time.monotonic() < deadline):
                    time.sleep(1)
                self.swarm.remove(attrs)
            self.swarm.rotate_worker_token()
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        record = self._decide(node_id, (APPROVED, JOINED), "not_revocable",
                              "only approved or joined nodes can be revoked", actor,
                              "node.revoke", reason, state=REVOKED,
                              reason=reason or f"revoked by {actor}")
        log.warning("%s revoked by %s; worker join token rotated", record.hostname, actor)
        self._notify(record)
        return record

    def forget(self, node_id: str, actor: str, reason: str = "") -> Record:
        """Let a revoked or rejected Pi ask again; the record stays in the history."""
        return self._decide(node_id, (REVOKED, REJECTED), "not_forgettable",
                            "only revoked or rejected records can be forgotten", actor,
                            "node.forget", reason, state=FORGOTTEN)

    def _decide(self, node_id: str, allowed: tuple[str, ...], code: str, rule: str,
                actor: str, action: str, why: str, **changes: Any) -> Record:
        """An admin's change of one record, if it is (still) in one of `allowed` states."""
        record = self._get(node_id)

        def change(doc: HostDoc) -> Record:
            current = self._in(doc, node_id)
            if current.state not in allowed:
                raise WireError(code, f"{current.hostname} is {current.state}; {rule}", 409)
            return doc.change(current, actor, action, why, **changes)

        return self.state.update_host(record.hostname, change)

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
                self._mark_pruned(hostname, attrs["ID"], actor)
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        return removed

    def _mark_pruned(self, hostname: str, swarm_node_id: str, actor: str) -> None:
        def change(doc: HostDoc) -> bool:
            hit = [r for r in doc.active() if r.swarm_node_id == swarm_node_id]
            for record in hit:
                doc.change(record, actor, "node.prune", "Down for too long", state=PRUNED)
            if not hit:
                raise Unchanged(False)
            return True

        if not (hostname and self.state.update_host(hostname, change)):
            self.state.audit(actor, "node.prune", f"swarm node {swarm_node_id} ({hostname}) "
                             "Down for too long", hostname=hostname)

    # -- internals -------------------------------------------------------------

    def _claim(self, doc: HostDoc, signed: SignedRequest, req: EnrollmentRequest,
               remote_addr: str, rule: Rule, adopt: bool, token_id: str) -> _Claim:
        """A new record for this request, written into the hostname's document (or the one
        a concurrent request of the same Pi wrote first). Runs again on a conflict."""
        mine = doc.mine(signed.thumbprint, req.hardware_id)
        if mine is not None:
            return _Claim(mine)
        actor = f"agent:{signed.thumbprint}"
        record = Record(
            id=new_id("enr"), hostname=req.hostname, hardware_id=req.hardware_id,
            thumbprint=signed.thumbprint, public_jwk=_jwk_text(signed.jwk), state=PENDING,
            role=rule.role, labels=dict(rule.labels), availability=rule.availability,
            approve=rule.approve, arch=req.arch, model=req.model, addresses=req.addresses,
            docker_version=req.docker_version, agent_version=req.agent_version,
            source=remote_addr,
        )
        others = doc.active()
        if adopt and not any(r.swarm_node_id == req.swarm.node_id for r in others):
            record.state, record.role, record.swarm_node_id = JOINED, "manager", \
                req.swarm.node_id
            doc.add(record, actor, "node.adopt", "the controller's own manager node (local "
                    "proof checked)")
            return _Claim(record, created=True)
        if others:
            record.kind = "replacement"
            record.reason = (f"hostname {req.hostname!r} already belongs to hardware "
                             f"{others[-1].hardware_id}; approve to replace it")
            if self._live(req.hostname):
                record.reason = (f"hostname {req.hostname!r} belongs to a live swarm node on "
                                 f"hardware {others[-1].hardware_id}: held; it can only be "
                                 "approved once the old Pi is gone")
        elif token_id:
            doc.add(record, actor, "node.request", f"rule {rule.match!r}")
            doc.change(record, f"token:{token_id}", "node.approve", "valid bootstrap token",
                       {"token_id": token_id}, state=APPROVED)
            return _Claim(record, created=True, token_used=True)
        elif rule.approve == "auto":
            log.warning("auto-approving %s as %s (rule %r): fine in a lab, not on a shared "
                        "LAN", record.hostname, record.role, rule.match)
            doc.add(record, actor, "node.request", f"rule {rule.match!r}")
            doc.change(record, "controller", "node.approve",
                       f"rule {rule.match!r} approves automatically", state=APPROVED)
            return _Claim(record, created=True)
        if len([r for r in doc.open_claims() if r.state == PENDING]) >= \
                self.limits.max_claims_per_hostname:  # the document's version guards this one
            raise too_many(f"{doc.hostname} has too many requests waiting for approval",
                           self.limits.max_claims_per_hostname, "max_claims_per_hostname")
        doc.add(record, actor, "node.request", record.reason or f"rule {rule.match!r}")
        return _Claim(record, created=True)

    @contextlib.contextmanager
    def _room_for(self, source: str) -> Iterator[None]:
        """Room for one more waiting request from `source`, held while it is written.
        Bounds what strangers can make us store: checking the limits and taking the room
        are one step in this controller, or a flood would slip past between the two; but
        the write (a Docker API call) happens outside the lock, so that a stalled one
        holds up no other request. Rooms being written count with the stored ones (from
        the write until the room is given back, twice: the error is on the safe side)."""
        limits = self.limits
        with self._room:
            total, mine = self.state.pending_counts(source)
            total, mine = total + self._taken.total(), mine + self._taken[source]
            if mine >= limits.max_pending_per_source:
                raise too_many(f"too many requests from {source} are waiting for approval",
                               limits.max_pending_per_source, "max_pending_per_source")
            if total >= limits.max_pending:
                raise too_many("too many requests are waiting for approval",
                               limits.max_pending, "max_pending")
            self._taken[source] += 1
        try:
            yield
        finally:
            with self._room:
                self._taken[source] -= 1
                if not self._taken[source]:
                    del self._taken[source]

    def _live(self, hostname: str) -> bool:
        try:
            return any(a["Status"]["State"] == "ready"
                       for a in self.swarm.nodes_named(hostname))
        except SwarmError:
            return False

    def _approve(self, record: Record, actor: str, why: str,
                 token: Token | None = None) -> Record | None:
        """Approve; for a replacement, first clear the stale swarm node and carry over its
        role, labels and availability (WireError hostname_in_use while it is alive). With
        a token, a use of it is spent: _Spent when none is left. None if the record was
        no longer pending."""
        carried: dict[str, Any] = {}
        archive: tuple[str, ...] = ()
        if record.kind == "replacement":
            carried, archive = self._take_over(record)
        if token is not None and not self.state.spend_token(token.id):
            raise _Spent
        detail = {"token_id": token.id} if token is not None else {}

        def change(doc: HostDoc) -> Record | None:
            current = doc.get(record.id)
            if current is None or current.state != PENDING:
                raise Unchanged(None)
            approved = doc.change(current, actor, "node.approve", why, detail,
                                  state=APPROVED, reason="", **carried)
            for old in doc.records:
                if old.id in archive and old.state not in ARCHIVED:
                    doc.change(old, actor, "node.replaced", f"replaced by {record.id}",
                               {"replaced_by": record.id}, state=REPLACED,
                               reason=f"replaced by {record.id}")
            return approved

        approved = self.state.update_host(record.hostname, change)
        if approved is None and token is not None:
            self.state.refund_token(token.id)
        return approved

    def _take_over(self, record: Record) -> tuple[dict[str, Any], tuple[str, ...]]:
        old = [r for r in self.state.host(record.hostname).active() if r.id != record.id]
        granted = [r for r in old if r.state == APPROVED
                   and time.time() - r.updated_at < self.grant_ttl]
        if granted:  # its grant may still be used: two Pis would join under one name
            raise WireError("hostname_in_use", (
                f"{record.hostname} was granted to another Pi (key {granted[0].fingerprint}) "
                f"{time.time() - granted[0].updated_at:.0f}s ago, and that grant may still be "
                "used; reject that record, or wait until it joins or its grant expires "
                f"({self.grant_ttl // 60} minutes)."), 409)
        try:
            stale = self.swarm.nodes_named(record.hostname)
            if any(a["Spec"].get("Role") == "manager" for a in stale):
                # Before the Ready check: without a quorum, node states are frozen.
                self.swarm.check_can_remove_manager()
            live = [a for a in stale if a["Status"]["State"] == "ready"]
            if live:
                raise WireError("hostname_in_use", (
                    f"{record.hostname} is still a Ready swarm node ({live[0]['ID']}): the "
                    "old Pi is alive. Shut it down (or 'enrollctl nodes revoke "
                    f"{record.hostname}') before approving its replacement."), 409)
            labels: dict[str, str] = {}
            role = ""
            for attrs in stale:
                node_role, node_labels = inherited(attrs)  # a lost manager the quorum
                labels.update(node_labels)  # keeper demoted is a manager again
                role = "manager" if node_role == "manager" else role or "worker"
                self.swarm.remove(attrs)
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        previous = old[-1] if old else None
        carried: dict[str, Any] = {"labels": {**record.labels, **labels}}
        if previous is not None:
            carried["labels"] = {**carried["labels"], **previous.labels}
            carried["role"] = previous.role
            carried["availability"] = previous.availability
        if role:
            carried["role"] = role
        if stale:
            log.info("removed %d stale swarm node(s) named %s", len(stale), record.hostname)
        return carried, tuple(r.id for r in old)

    def _get(self, node_id: str) -> Record:
        record = self.state.record(node_id)
        if record is None:
            raise WireError("not_found", f"no node record {node_id!r}", 404)
        return record

    @staticmethod
    def _in(doc: HostDoc, node_id: str) -> Record:
        record = doc.get(node_id)
        if record is None:
            raise WireError("not_found", f"no node record {node_id!r}", 404)
        return record

    def _own(self, signed: SignedRequest, node_id: str) -> Record:
        record = self.state.record(node_id)
        # Same answer for "no such record" and "not yours": ids are not to be probed.
        if record is None or record.thumbprint != signed.thumbprint:
            raise WireError("not_found", f"no enrollment {node_id!r} for this agent key", 404)
        return record

    def _stored(self, record: Record) -> Record:
        """The record as the store has it now, not as memory last heard of it."""
        self.state.refresh(host_key(record.hostname))
        return self._get(record.id)

    def _write_seen(self, record: Record) -> Record:
        def change(doc: HostDoc) -> Record:
            current = self._in(doc, record.id)
            current.last_seen = self.state.last_seen(current)
            return current
        return self.state.update_host(record.hostname, change)

    def _again(self, record: Record, req: EnrollmentRequest, thumbprint: str) -> Record:
        """The same Pi (hardware id and key) asking again: restart, re-join, or waiting.
        Written only when something changed, so that a fleet asking again costs no writes;
        and for a record still pending (or rejected), at most once a minute, so that a
        stranger who says something new on each request cannot make a write of each."""
        rejoin = record.state == JOINED and req.swarm.state != "active"
        facts = {"addresses": req.addresses, "agent_version": req.agent_version,
                 "docker_version": req.docker_version}
        moved = any(getattr(record, k) != v for k, v in facts.items())
        if moved and record.state in (PENDING, REJECTED):
            moved = time.time() - record.last_seen >= FACTS_QUIET
        if self.state.seen(record) or rejoin or moved:
            def change(doc: HostDoc) -> Record:
                current = self._in(doc, record.id)
                for key, value in facts.items():
                    setattr(current, key, value)
                current.last_seen = self.state.last_seen(current)
                if current.state == JOINED and req.swarm.state != "active":
                    # Same key, same hardware, no longer in the swarm: the approval stands.
                    doc.change(current, f"agent:{thumbprint}", "node.rejoin",
                               "the Pi left the swarm; re-granted", state=APPROVED)
                return current
            record = self.state.update_host(record.hostname, change)
        if record.state == PENDING and req.bootstrap_token:
            record = self._try_token(record, req, thumbprint)
        return record

    def _try_token(self, record: Record, req: EnrollmentRequest, thumbprint: str) -> Record:
        if record.approve != "token":
            return record
        token = usable_token(self.state, req.bootstrap_token, req.hostname)
        if token is None:
            return self._refused(record, thumbprint)
        try:
            approved = self._approve(record, f"token:{token.id}", "valid bootstrap token",
                                     token)
        except _Spent:
            return self._refused(record, thumbprint)
        except WireError as exc:  # a replacement whose old node is still alive: held
            if exc.code != "hostname_in_use":
                raise
            return self._held(record, f"held: {exc.message}")
        return approved or self._get(record.id)

    def _refused(self, record: Record, thumbprint: str) -> Record:
        """The token was no good: one audit row per record, counted on repeats (at most
        once a minute), not one row per request, even when several keys take turns."""
        reason = ("bootstrap token unknown, expired, spent, revoked or not for this "
                  "hostname")

        def change(doc: HostDoc) -> Record:
            current = self._in(doc, record.id)
            now = time.time()
            last = next((e for e in reversed(doc.events)
                         if e.action == "token.refused" and e.node_id == record.id), None)
            if last is None:
                doc.log(f"agent:{thumbprint}", "token.refused", current, reason, at=now)
            elif now - last.last_at < REFUSAL_QUIET:
                raise Unchanged(current)
            else:
                last.count, last.last_at = last.count + 1, now
            return current

        return self.state.update_host(record.hostname, change)

    def _held(self, record: Record, held: str) -> Record:
        if record.reason == held:
            return record
        return self._decide(record.id, (PENDING,), "not_pending", "it is not pending",
                            "controller", "node.held", held, reason=held)

    def _adoptable(self, signed: SignedRequest, req: EnrollmentRequest) -> bool:
        """The agent on this controller's own Pi, proven by the local secret, whose daemon
        is this very manager."""
        if not self.adoption_secret or not req.swarm.node_id or \
                not proof_holds(self.adoption_secret, signed.thumbprint, req.local_proof):
            return False
        try:
            local = self.swarm.local()
        except SwarmError as exc:
            if exc.code == "not_a_manager":
                return False
            # the daemon cannot say now: asked again, not handled as a stranger's Pi
            raise WireError(exc.code, exc.message, exc.status) from None
        return (req.swarm.node_id == local.node_id
                and req.hostname.lower() == local.hostname.lower())

    def _answer(self, record: Record, written: bool = False) -> Answer:
        """A grant for an approved record: read from the store first, unless this request
        has just written it (`written`)."""
        if record.state == APPROVED and not written:
            record = self._stored(record)
        if record.state != APPROVED:
            return Answer(record)
        return Answer(record, self._grant(record))

    def _grant(self, record: Record) -> str:
        try:
            facts = self.swarm.join_facts()
        except SwarmError as exc:
            raise WireError(exc.code, exc.message, exc.status) from None
        now = int(time.time())
        grant = Grant(
            hostname=record.hostname, agent=record.thumbprint, role=record.role,
            join_token=facts.worker_token,  # managers are promoted after joining
            managers=facts.managers, labels=record.labels, cluster=facts.cluster_id,
            enrollment=record.id, iat=now, exp=now + self.grant_ttl,
            controllers=self.controller_urls()[:MAX_CONTROLLERS],
        )
        return sign_grant(self.ca_key, grant)


class _Spent(Exception):
    """The token's last use went to another request meanwhile."""


def _jwk_text(jwk: dict[str, str]) -> str:
    return json.dumps(jwk, sort_keys=True)
