"""The cluster state as a controller sees it: every document in memory, written through.

Reads come from memory (with indexes for what requests look up: a record by id, a
token by hash, revoked keys and boards, how many requests wait for approval). Writes
go to the backend under the version that was read; when another writer came first
(Conflict), the document is read again and the change applied again, so a change is a
function of the document (`update_host`), never a blind overwrite. The backend tells of
writes made elsewhere (`watch`), so the memory follows the other controllers.

Token uses are spent in groups: requests that arrive together for one token share one
read of it, and each write takes a few uses more than the group needs, kept in memory for
the next groups (a reservation, at most RESERVE_MOST and never more than 1/RESERVE_SHARE
of the uses left: a token with RESERVE_SHARE uses left or fewer is spent one use per
request). With hundreds of Pis and one token, a write per group would still be a third
of the store's writes; the read before each group is what makes a revocation or expiry
decided on any controller count at once. Uses reserved and not spent go back to the token
after RETURN_AFTER seconds without a spend, and when the controller stops; a controller
that dies holding some, or whose write to give them back fails, loses them (at most
RESERVE_MOST): never are they given back twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.wire.errors import WireError
from controller.state.backend import Backend, Conflict, Stored, StoreUnavailable
from controller.state.model import (
    LOOSE_EVENTS_KEPT,
    PENDING,
    REVOKED,
    Event,
    HostDoc,
    Record,
    Token,
    admin_key,
    audit_key,
    host_key,
    token_key,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 20
NO_QUORUM = (
    "the swarm has no Raft quorum now (or this manager cannot reach it), and the cluster "
    "state lives in it: nothing can be written until it has one again; what was written "
    "before can still be read. Bring the dead manager back if you can. If it is gone for "
    "good, run 'docker swarm init --force-new-cluster --advertise-addr <its LAN IP>' on a "
    "surviving manager. Two managers tolerate no failure: run one, three or five (the "
    "quorum keeper keeps an odd number).")
SEEN_WRITE_AFTER = 900.0  # a record's last_seen is written back at most this often
RESERVE_MOST = 32  # token uses a write may take beyond what its group needs
RESERVE_SHARE = 16  # ... and at most this fraction (1/16) of the uses left
RETURN_AFTER = 10.0  # seconds without a spend after which reserved uses go back


class Unchanged(Exception):
    """Raised by a change function that decided to write nothing; carries its result."""

    def __init__(self, result: Any) -> None:
        super().__init__("unchanged")
        self.result = result


@dataclass
class _Waiter:
    done: bool = False
    granted: bool = False


@dataclass
class _Spending:
    """The requests waiting to spend a use of one token, the one read or write at a time,
    and the uses this controller has taken from the token and not spent yet."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    write: threading.Lock = field(default_factory=threading.Lock)
    waiting: list[_Waiter] = field(default_factory=list)
    spare: int = 0  # reserved (written off the token's uses_left), not yet spent
    used_at: float = 0.0  # monotonic time of the last spend


class State:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.RLock()
        self._docs: dict[str, Stored] = {}
        # indexes, each kept per document so that a document's old entries can be dropped
        self._of_kind: dict[str, set[str]] = {}  # "host/" -> its keys (every answer lists
        # the controllers: scanning every key for them cost a grant 0.1-0.5 ms)
        self._record_host: dict[str, str] = {}  # record id -> host key
        self._revoked: dict[str, set[str]] = {}  # thumbprint or hardware id -> host keys
        self._pending: dict[str, Counter[str]] = {}  # host key -> pending records by source
        self._token_hash: dict[str, str] = {}  # hash -> token key
        self._admin_hash: dict[str, str] = {}  # hash -> admin name
        self._seen: dict[str, float] = {}  # record id -> last seen (this controller)
        self._generation = 0  # counts changes of memory's copies; never goes back
        self._changed_at: dict[str, int] = {}  # key -> the generation of its last change
        self._spending: dict[str, _Spending] = {}
        self._returner: threading.Thread | None = None
        self._closing = threading.Event()
        self.reload()
        backend.watch(self._changed)

    # ---- the memory ---------------------------------------------------------------------

    def reload(self) -> None:
        docs = self.backend.load_all()
        with self._lock:
            for key in list(self._docs):
                self._put(key, None)
            for stored in docs:
                self._take(stored.key, stored)

    def _changed(self, key: str, stored: Stored | None) -> None:
        """A write elsewhere: keep it unless memory already holds a newer version (or, for
        a write of ours whose version is not known, a read no newer than what it replaced:
        such a read began before our write)."""
        with self._lock:
            current = self._docs.get(key)
            if stored is not None and current is not None:
                if current.version >= stored.version:
                    return
                if current.text == stored.text:  # a neighbour's write on its shelf
                    self._docs[key] = stored  # (the version only: nothing to index again)
                    return
            self._take(key, stored)

    def refresh(self, key: str) -> Stored | None:
        """Read the document from the store (memory may be behind another controller's
        write); what memory holds if the stored one is malformed."""
        try:
            stored = self.backend.get(key)
        except StoreUnavailable as exc:
            log.warning("cannot read %s: %s", key, exc)
            raise WireError("quorum_lost", NO_QUORUM, 503) from None
        except ValueError as exc:
            log.warning("ignoring the stored document %s: %s", key, type(exc).__name__)
            return self._stored(key)
        with self._lock:
            return stored if self._take(key, stored) else self._docs.get(key)

    def _take(self, key: str, stored: Stored | None) -> bool:
        """Put a document read from the store into memory, unless it is malformed (written
        by hand, or by a newer controller in a way this one cannot read): that one is
        logged and skipped, and memory keeps what it had."""
        try:
            if stored is not None:
                _check(stored)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("ignoring the stored document %s: malformed (%s)", key,
                        type(exc).__name__)
            return False
        self._put(key, stored)
        return True

    def _put(self, key: str, stored: Stored | None) -> None:
        self._generation += 1
        old = self._docs.pop(key, None)
        kind = "".join(key.partition("/")[:2])  # "host/", or "ca" (no kind)
        if old is not None:
            self._of_kind[kind].discard(key)
        self._changed_at.pop(key, None)
        old_body = old.body if old is not None else None  # parsed once for both
        if old_body is not None:
            self._unindex(key, old_body)
        if stored is not None:
            self._docs[key] = stored
            self._of_kind.setdefault(kind, set()).add(key)
            self._changed_at[key] = self._generation
            self._index(key, stored.body)
        if old_body is not None:
            self._forget_seen(key, old_body)

    def _index(self, key: str, body: dict[str, Any]) -> None:
        kind = key.partition("/")[0]
        if kind == "host":
            pending: Counter[str] = Counter()
            for r in body.get("records", []):
                self._record_host[r["id"]] = key
                if r["state"] == REVOKED:
                    for ident in (r["thumbprint"], r["hardware_id"]):
                        self._revoked.setdefault(ident, set()).add(key)
                elif r["state"] == PENDING:
                    pending[r.get("source", "")] += 1
            if pending:
                self._pending[key] = pending
        elif kind == "token":
            self._token_hash[body["hash"]] = key
        elif kind == "admin":
            self._admin_hash[body["hash"]] = body["name"]

    def _unindex(self, key: str, body: dict[str, Any]) -> None:
        kind = key.partition("/")[0]
        if kind == "host":
            for r in body.get("records", []):
                if self._record_host.get(r["id"]) == key:
                    del self._record_host[r["id"]]
                for ident in (r["thumbprint"], r["hardware_id"]):
                    keys = self._revoked.get(ident)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del self._revoked[ident]
            self._pending.pop(key, None)
        elif kind == "token":
            self._token_hash.pop(body["hash"], None)
        elif kind == "admin":
            self._admin_hash.pop(body["hash"], None)

    def _forget_seen(self, key: str, old: dict[str, Any]) -> None:
        """Last seen of the records that left with the old copy (removed, trimmed): kept
        only for records that exist, so whatever creates and drops records cannot grow it.
        After the new copy is indexed, since records that stay keep theirs."""
        for r in old.get("records", []) if key.startswith("host/") else []:
            if r["id"] not in self._record_host:
                self._seen.pop(r["id"], None)

    def _stored(self, key: str) -> Stored | None:
        with self._lock:
            return self._docs.get(key)

    def _keys(self, kind: str) -> list[str]:
        with self._lock:
            return list(self._of_kind.get(kind + "/", ()))

    # ---- writing one document under its version -----------------------------------------

    def _write(self, key: str, old: Stored | None, body: dict[str, Any] | None) -> None:
        """One compare-and-swap; Conflict if the document moved meanwhile."""
        try:
            if body is None:
                if old is not None:
                    self.backend.delete(old)
                new = None
            elif old is None:
                new = self.backend.create(key, body)
            else:
                new = self.backend.update(old, body)
        except Conflict:
            self.refresh(key)
            raise
        except StoreUnavailable as exc:
            log.warning("cannot write %s: %s", key, exc)
            raise WireError("quorum_lost", NO_QUORUM, 503) from None
        with self._lock:
            self._put(key, new)

    def _update(self, key: str, change: Callable[[Stored | None], tuple[dict[str, Any] | None,
                                                                        T]]) -> T:
        """Apply `change` (old document -> (new body or None to delete, result)) until it
        is written on top of the version it saw. `change` may run more than once."""
        for _ in range(ATTEMPTS):
            old = self._stored(key)
            if old is not None and not old.exact:
                old = self.refresh(key)
            try:
                body, result = change(old)
            except Unchanged as same:
                return same.result  # type: ignore[no-any-return]
            try:
                self._write(key, old, body)
            except Conflict:
                continue
            return result
        raise WireError("state_busy", f"{key} kept changing while we wrote it; try again",
                        503)

    # ---- any other document (leases, the controllers, shared files) --------------------

    def doc(self, key: str) -> dict[str, Any] | None:
        stored = self._stored(key)
        return stored.body if stored else None

    def doc_version(self, key: str) -> int:
        """Changes whenever this controller's copy of the document does (the store's own
        version is not known after every write)."""
        with self._lock:
            return self._changed_at.get(key, 0)

    def docs(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every document of a kind (`controller`, say), by key."""
        return {k: body for k in self._keys(kind) if (body := self.doc(k)) is not None}

    def update_doc(self, key: str, change: Callable[[dict[str, Any] | None],
                                                     dict[str, Any] | None]) -> None:
        """Write `change(current body)` (None deletes) under the version it saw; a change
        may raise Unchanged to write nothing."""
        def apply(old: Stored | None) -> tuple[dict[str, Any] | None, None]:
            before = old.body if old else None
            body = change(old.body if old else None)
            if before == body:
                raise Unchanged(None)
            return body, None
        self._update(key, apply)

    # ---- hostnames and their records ----------------------------------------------------

    def host(self, hostname: str) -> HostDoc:
        """The hostname's document (a copy to read or change; empty if none)."""
        stored = self._stored(host_key(hostname))
        return HostDoc.from_json(stored.body) if stored else HostDoc(hostname)

    def update_host(self, hostname: str, change: Callable[[HostDoc], T]) -> T:
        """Apply `change` to a fresh copy of the hostname's document and write it, again
        on a newer copy if someone else wrote first. `change` raises Unchanged(result)
        (or any error) to write nothing."""
        def apply(old: Stored | None) -> tuple[dict[str, Any] | None, T]:
            doc = HostDoc.from_json(old.body) if old else HostDoc(hostname)
            result = change(doc)
            doc.trim()
            body = doc.to_json()
            if old is not None and body == old.body:
                raise Unchanged(result)
            return (body if doc.records or doc.events else None), result
        return self._update(host_key(hostname), apply)

    def hosts(self) -> Iterator[HostDoc]:
        for key in sorted(self._keys("host")):
            stored = self._stored(key)
            if stored is not None:
                yield HostDoc.from_json(stored.body)

    def record(self, record_id: str) -> Record | None:
        with self._lock:
            key = self._record_host.get(record_id)
            stored = self._docs.get(key) if key else None
        if stored is None:
            return None
        return next((Record.from_json(r) for r in stored.body["records"]
                     if r["id"] == record_id), None)

    def revoked_matching(self, thumbprint: str, hardware_id: str) -> Record | None:
        """A revoked record of this key or this board: such a Pi is refused until forgotten."""
        with self._lock:
            keys = self._revoked.get(thumbprint, set()) | self._revoked.get(hardware_id, set())
        found = [r for key in keys for r in self.host(key.partition("/")[2]).records
                 if r.state == REVOKED
                 and (r.thumbprint == thumbprint or r.hardware_id == hardware_id)]
        return max(found, key=lambda r: r.updated_at) if found else None

    def pending_counts(self, source: str) -> tuple[int, int]:
        """(requests waiting for approval in all, of them from `source`)."""
        with self._lock:
            total = sum(sum(c.values()) for c in self._pending.values())
            mine = sum(c.get(source, 0) for c in self._pending.values())
        return total, mine

    def in_state(self, state: str) -> list[Record]:
        return [r for doc in self.hosts() for r in doc.records if r.state == state]

    # ---- last seen: in memory, written back now and then --------------------------------

    def seen(self, record: Record) -> bool:
        """Note that the record's Pi asked now; True when it is time to write it back."""
        now = time.time()
        with self._lock:
            if record.id in self._record_host:  # not one removed meanwhile
                self._seen[record.id] = now
        return now - record.last_seen > SEEN_WRITE_AFTER

    def last_seen(self, record: Record) -> float:
        return max(record.last_seen, self._seen.get(record.id, 0.0))

    # ---- bootstrap tokens ---------------------------------------------------------------

    def create_token(self, token: Token, actor: str) -> None:
        token.log(actor, "token.create", token.description,
                  {"uses": token.uses_total, "expires_at": token.expires_at,
                   "hostname_glob": token.hostname_glob})
        self._write(token_key(token.id), None, token.to_json())

    def token(self, token_id: str) -> Token | None:
        """The token as this controller sees it: its uses left count the ones this
        controller holds in reserve (another controller's reserve is not counted), until
        no use of it can be spent any more (revoked, expired)."""
        stored = self._stored(token_key(token_id))
        if stored is None:
            return None
        token = Token.from_json(stored.body)
        with self._lock:
            spending = self._spending.get(token_id)
        if spending is not None and not _spent_out(token):
            token.uses_left += spending.spare
        return token

    def token_by_hash(self, digest: str) -> Token | None:
        with self._lock:
            key = self._token_hash.get(digest)
        return self.token(key.partition("/")[2]) if key else None

    def tokens(self) -> list[Token]:
        found = [self.token(k.partition("/")[2]) for k in self._keys("token")]
        return sorted((t for t in found if t is not None), key=lambda t: t.created_at)

    def update_token(self, token_id: str, change: Callable[[Token], T]) -> T:
        def apply(old: Stored | None) -> tuple[dict[str, Any] | None, T]:
            if old is None:
                raise WireError("not_found", f"no bootstrap token {token_id!r}", 404)
            token = Token.from_json(old.body)
            result = change(token)
            del token.events[:-100]
            body = token.to_json()
            if body == old.body:
                raise Unchanged(result)
            return body, result
        return self._update(token_key(token_id), apply)

    def spend_token(self, token_id: str) -> bool:
        """Take one use of the token if it is still valid; False if none is left."""
        with self._lock:
            spending = self._spending.setdefault(token_id, _Spending())
        me = _Waiter()
        with spending.lock:
            spending.waiting.append(me)
        with spending.write:
            if me.done:
                return me.granted
            with spending.lock:
                batch, spending.waiting = spending.waiting, []
            granted = 0
            try:
                granted = self._take_uses(token_id, spending, len(batch))
            finally:  # on an error, the whole batch is told no (and the error goes up)
                for i, waiter in enumerate(batch):
                    waiter.granted, waiter.done = i < granted, True
        return me.granted

    def _take_uses(self, token_id: str, spending: _Spending, wanted: int) -> int:
        """Up to `wanted` uses, from the reserve when it has them, after reading the token
        (exact: a revocation or expiry elsewhere counts at once). Holds spending.write."""
        stored = self.refresh(token_key(token_id))
        if stored is None or _spent_out(Token.from_json(stored.body)):
            spending.spare = 0  # no use of it will be spent (nor given back)
            return 0
        spending.used_at = time.monotonic()
        if spending.spare < wanted:
            closing = self._closing.is_set()  # no reserve that nothing would give back

            def reserve(token: Token) -> int | None:
                if _spent_out(token):  # revoked or expired since it was read
                    raise Unchanged(None)
                need = wanted - spending.spare
                extra = 0 if closing else min(RESERVE_MOST,
                                              (token.uses_left - need) // RESERVE_SHARE)
                got = min(token.uses_left, need + max(extra, 0))
                if not got:
                    raise Unchanged(0)
                token.uses_left -= got
                return got
            try:
                got = self.update_token(token_id, reserve)
            except WireError as exc:
                if exc.code != "not_found":
                    raise
                got = None
            if got is None:
                spending.spare = 0
                return 0
            spending.spare += got
            self._start_returner()
        got = min(wanted, spending.spare)
        spending.spare -= got
        return got

    def refund_token(self, token_id: str) -> None:
        """Give back a use that was spent for an approval that another request made: to
        this controller's reserve, which goes back to the token when it is no longer used."""
        with self._lock:
            spending = self._spending.setdefault(token_id, _Spending())
        with spending.write:
            spending.spare += 1
            spending.used_at = time.monotonic()
        self._start_returner()

    def _start_returner(self) -> None:
        with self._lock:
            if self._returner is None and not self._closing.is_set():
                self._returner = threading.Thread(target=self._return_spares,
                                                  name="token-reserve", daemon=True)
                self._returner.start()

    def _return_spares(self) -> None:
        while not self._closing.wait(RETURN_AFTER / 4):
            self.return_spares(idle=RETURN_AFTER)

    def return_spares(self, idle: float = 0.0) -> None:
        """Give the uses reserved and not spent back to their tokens (those unused for
        `idle` seconds). A write that fails may still have been applied (the store answered
        "deadline exceeded" as its leader changed), and giving them again would let the
        token be spent more than its uses: so they are given back once, and lost if that
        write fails (logged; at most RESERVE_MOST per token)."""
        with self._lock:
            held = list(self._spending.items())
        for token_id, spending in held:
            with spending.write:
                if not spending.spare or time.monotonic() - spending.used_at < idle:
                    continue
                spare, spending.spare = spending.spare, 0

                def give(token: Token, spare: int = spare) -> None:
                    if _spent_out(token):
                        raise Unchanged(None)
                    token.uses_left = min(token.uses_total, token.uses_left + spare)
                try:
                    self.update_token(token_id, give)
                except Exception as exc:  # (not_found: the token is gone, and its uses)
                    if not (isinstance(exc, WireError) and exc.code == "not_found"):
                        log.warning("%d reserved uses of token %s could not be given back "
                                    "and are lost (%s)", spare, token_id,
                                    getattr(exc, "code", type(exc).__name__))

    # ---- admins -------------------------------------------------------------------------

    def add_admin(self, name: str, digest: str) -> None:
        key = admin_key(name)
        self._update(key, lambda _old: ({"name": name, "hash": digest,
                                         "created_at": time.time()}, None))
        self.audit("controller", "admin.create", detail={"name": name})

    def admin_by_hash(self, digest: str) -> str | None:
        with self._lock:
            return self._admin_hash.get(digest)

    # ---- the audit log ------------------------------------------------------------------

    def audit(self, actor: str, action: str, reason: str = "",
              detail: dict[str, Any] | None = None, hostname: str = "") -> None:
        """An event about no record or token (baseline changes, admins, pruning)."""
        event = Event(time.time(), actor, action, "", hostname, reason, dict(detail or {}))
        self._write(audit_key(event), None, {"event": event.to_json()})
        loose = sorted(self._keys("audit"))
        for key in loose[:-LOOSE_EVENTS_KEPT]:
            with contextlib.suppress(Conflict, WireError):  # trimmed elsewhere first
                self._write(key, self._stored(key), None)

    def events(self, node_id: str = "", hostname: str = "", action: str = "", actor: str = "",
               since: float = 0.0, before: str = "", limit: int = 200) -> list[Event]:
        """Audit events, newest first, filtered; `before` an event id (for the next page)."""
        def wanted(e: Event) -> bool:
            return ((not node_id or e.node_id == node_id)
                    and (not hostname or e.hostname.lower() == hostname.lower())
                    and (not action or e.action == action)
                    and (not actor or e.actor == actor)
                    and e.last_at >= since and (not before or e.id < before))
        with self._lock:
            stored = list(self._docs.values())
        found: list[Event] = []
        for doc in stored:
            kind = doc.key.partition("/")[0]
            if hostname and kind not in ("host", "audit"):  # loose events may name a host
                continue
            if kind == "host" and hostname and doc.key != host_key(hostname):
                continue
            raw = ([doc.body["event"]] if kind == "audit" else doc.body.get("events", []))
            found.extend(e for e in map(Event.from_json, raw) if wanted(e))
        found.sort(key=lambda e: e.id, reverse=True)
        return found[:limit]

    def close(self) -> None:
        self._closing.set()
        self.return_spares()  # (a failure is logged there, never raised)
        self.backend.close()


def _spent_out(token: Token) -> bool:
    """No use of the token may be spent any more: revoked, or expired."""
    return token.revoked_at is not None or token.expires_at <= time.time()


def _check(stored: Stored) -> None:
    """Raise if the document is not one this controller can index and read (KeyError,
    TypeError or ValueError): checked before memory changes, so a bad one changes nothing."""
    kind, body = stored.key.partition("/")[0], stored.body
    if kind == "host":
        doc = HostDoc.from_json(body)
        texts = [e.id for e in doc.events]
        for r in doc.records:
            texts += [r.id, r.state, r.thumbprint, r.hardware_id, r.source]
    elif kind == "token":
        texts = [Token.from_json(body).hash]
    elif kind == "admin":
        texts = [body["hash"], body["name"]]
    elif kind == "audit":
        texts = [Event.from_json(body["event"]).id]
    else:
        return
    if not all(isinstance(text, str) for text in texts):
        raise ValueError("a field that must be text is not")
