"""The documents the cluster state is made of, and how each is written as JSON.

The state is a set of small documents, each changed as a whole under its version
(compare-and-swap), so that several controllers can share it safely:

- one per hostname (`host/<hostname>`): every record of a Pi that claimed the name, and
  the audit events about them, so that a decision and its audit row are one write;
- one per bootstrap token (`token/<id>`), with the events about it;
- one per admin (`admin/<name>`);
- one per event that belongs to no hostname or token (`audit/<event id>`).

Events and archived records are kept to a bounded number per document (see `trim`).
`from_json` ignores fields it does not know: during a rolling upgrade, a newer controller
may write some.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from agent.wire.keys import fingerprint

# States an agent can be told about; `seen` exists only for mDNS sightings.
PENDING, APPROVED, JOINED, REJECTED = "pending", "approved", "joined", "rejected"
REVOKED, FORGOTTEN, PRUNED, REPLACED = "revoked", "forgotten", "pruned", "replaced"
# History only: never matched against a new request.
ARCHIVED = frozenset({REPLACED, FORGOTTEN, PRUNED})
# A claim of a hostname that is still open: what an admin decision by name must single out.
OPEN = frozenset({PENDING, APPROVED, JOINED})
# What the node list can be filtered by: a record's state, a Pi only seen over mDNS, a
# swarm node without a record, and a node Down for too long.
NODE_FILTERS = (PENDING, APPROVED, JOINED, REJECTED, REVOKED, REPLACED, FORGOTTEN, PRUNED,
                "seen", "unmanaged", "stale")

EVENTS_KEPT = 100  # per document, newest kept (decisions before requests and refusals)
# What a stranger can make many of; trimmed before the decisions about a hostname.
REPEATED = frozenset({"node.request", "token.refused"})
LOOSE_EVENTS_KEPT = 1000  # audit documents of their own (baseline, admins, pruning)
ARCHIVED_KEPT = 10  # archived records per hostname, newest kept
# Bytes of JSON past which a hostname's oldest requests and refusals go (what strangers
# can make many of; its records and decisions are bounded otherwise): up to 15 hostnames
# share a config (controller.state.shelves), and 15 of these stay well under Raft's
# limit of about 1.5 MB for one write.
HOST_DOC_MOST = 64 << 10


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def event_id(at: float) -> str:
    """Sortable by time as text (fixed width), unique across controllers."""
    return f"{int(at * 1_000_000):015x}-{secrets.token_hex(3)}"


@dataclass
class Event:
    """One audit row: who did what to which record, when, why. `count` > 1 when the same
    refusal was repeated (last at `last_at`) rather than written again."""

    at: float
    actor: str
    action: str
    node_id: str = ""
    hostname: str = ""
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    last_at: float = 0.0
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = event_id(self.at)
        if not self.last_at:
            self.last_at = self.at

    def same_as(self, other: Event) -> bool:
        return (self.actor, self.action, self.node_id, self.reason, self.detail) == (
            other.actor, other.action, other.node_id, other.reason, other.detail)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(**{k: v for k, v in data.items() if k in _EVENT_FIELDS})


_EVENT_FIELDS = {f.name for f in fields(Event)}


@dataclass
class Record:
    """One enrollment record: a Pi (hostname + hardware + key) and where it stands."""

    id: str
    hostname: str
    hardware_id: str
    thumbprint: str
    public_jwk: str
    # pending | approved | joined | rejected | revoked, and the archived ones that are
    # history only: replaced | forgotten | pruned
    state: str
    role: str
    kind: str = "new"  # new | replacement
    labels: dict[str, str] = field(default_factory=dict)
    availability: str = "active"
    approve: str = "manual"
    reason: str = ""
    arch: str = ""
    model: str = ""
    addresses: list[str] = field(default_factory=list)
    docker_version: str = ""
    agent_version: str = ""
    swarm_node_id: str = ""
    source: str = ""  # the address its first request came from
    created_at: float = 0.0
    updated_at: float = 0.0
    last_seen: float = 0.0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.thumbprint)

    def public(self) -> dict[str, Any]:
        """As the admin API shows it: the key only by its id and fingerprint."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.pop("public_jwk")
        data["agent_id"] = data.pop("thumbprint")
        data["fingerprint"] = self.fingerprint
        data["first_seen"] = self.created_at
        return data

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


_RECORD_FIELDS = {f.name for f in fields(Record)}


def _log(events: list[Event], event: Event) -> Event:
    """Append, or count a repeat of the newest event instead of writing it again."""
    if events and events[-1].same_as(event):
        last = events[-1]
        last.count += 1
        last.last_at = event.at
        return last
    events.append(event)
    return event


@dataclass
class HostDoc:
    """Every record of one hostname (case-insensitive), oldest first, and their events."""

    hostname: str
    records: list[Record] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> str:
        return host_key(self.hostname)

    def get(self, record_id: str) -> Record | None:
        return next((r for r in self.records if r.id == record_id), None)

    def active(self) -> list[Record]:
        """Records that are not history."""
        return [r for r in self.records if r.state not in ARCHIVED]

    def open_claims(self) -> list[Record]:
        return [r for r in self.records if r.state in OPEN]

    def mine(self, thumbprint: str, hardware_id: str) -> Record | None:
        """The active record of this very Pi: same key and same hardware."""
        return next((r for r in self.active() if r.thumbprint == thumbprint
                     and r.hardware_id == hardware_id), None)

    def change(self, record: Record, actor: str, action: str, why: str = "",
               detail: dict[str, Any] | None = None, **changes: Any) -> Record:
        """Change a record of this doc and log it (the same write)."""
        now = time.time()
        for key, value in changes.items():
            setattr(record, key, value)
        record.updated_at = now
        shown = {k: v for k, v in changes.items() if k not in ("last_seen",)}
        self.log(actor, action, record, why, {**shown, **(detail or {})}, now)
        return record

    def add(self, record: Record, actor: str, action: str, why: str = "") -> Record:
        now = time.time()
        record.created_at = record.updated_at = record.last_seen = now
        self.records.append(record)
        self.log(actor, action, record, why, {}, now)
        return record

    def log(self, actor: str, action: str, record: Record | None = None, why: str = "",
            detail: dict[str, Any] | None = None, at: float | None = None) -> Event:
        return _log(self.events, Event(at if at is not None else time.time(), actor, action,
                                       record.id if record else "", self.hostname, why,
                                       dict(detail or {})))

    def trim(self) -> None:
        """Bound the document: the newest events, the newest archived records, and what
        strangers' requests and refusals add to its size (HOST_DOC_MOST). The oldest
        requests and refusals go first, so that strangers asking cannot push the decisions
        about the hostname (approve, reject, revoke, replace...) out."""
        extra = len(self.events) - EVENTS_KEPT
        if extra > 0:
            repeated = [i for i, e in enumerate(self.events) if e.action in REPEATED]
            gone = set(repeated[:extra])
            self.events = [e for i, e in enumerate(self.events) if i not in gone][-EVENTS_KEPT:]
        archived = [r for r in self.records if r.state in ARCHIVED]
        drop = {r.id for r in archived[:-ARCHIVED_KEPT]} if len(archived) > ARCHIVED_KEPT \
            else set()
        self.records = [r for r in self.records if r.id not in drop]
        over = len(json.dumps(self.to_json())) - HOST_DOC_MOST
        while over > 0:
            i = next((i for i, e in enumerate(self.events) if e.action in REPEATED), None)
            if i is None:  # decisions are never dropped for size
                break
            over -= len(json.dumps(self.events.pop(i).to_json())) + 2

    def to_json(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "records": [r.to_json() for r in self.records],
                "events": [e.to_json() for e in self.events]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostDoc:
        return cls(data["hostname"], [Record.from_json(r) for r in data.get("records", [])],
                   [Event.from_json(e) for e in data.get("events", [])])


@dataclass
class Token:
    """A bootstrap token; the secret itself is never stored, only its SHA-256."""

    id: str
    hash: str
    description: str
    hostname_glob: str
    uses_total: int
    uses_left: int
    created_at: float
    expires_at: float
    revoked_at: float | None
    created_by: str
    events: list[Event] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.pop("hash")
        data.pop("events")
        return data

    def log(self, actor: str, action: str, why: str = "",
            detail: dict[str, Any] | None = None) -> Event:
        return _log(self.events, Event(time.time(), actor, action, "", "", why,
                                       {"token_id": self.id, **(detail or {})}))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = [e.to_json() for e in self.events]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Token:
        events = [Event.from_json(e) for e in data.get("events", [])]
        return cls(**{k: v for k, v in data.items() if k in _TOKEN_FIELDS}, events=events)


_TOKEN_FIELDS = {f.name for f in fields(Token)} - {"events"}


def host_key(hostname: str) -> str:
    return f"host/{hostname.lower()}"


def token_key(token_id: str) -> str:
    return f"token/{token_id}"


def admin_key(name: str) -> str:
    return f"admin/{name}"


def audit_key(event: Event) -> str:
    return f"audit/{event.id}"
