"""The documents in the swarm's own Raft store, through the local manager's Docker API.

Each document is in a label of a swarm config object: its own config
(`swarm-enroll-<hash of its key>`), or for a hostname's, a shelf it shares with others
(controller.state.shelves: Pis enrolling together share one write). Configs are stored
by every manager in the replicated, encrypted Raft log, only managers serve them, and
their labels can be updated under the object's version: Docker refuses an update made on
an older version ("update out of sequence"), which is the compare-and-swap the state
needs. A config is sent to a worker only when a service uses it, and no service uses
these. This is docker/infrakit's idea of keeping a controller's state in the swarm
itself (it kept one snapshot in the swarm's own labels); here the documents are spread
over many objects, so that writers of different documents seldom wait for each other.

Limits (measured on this project's lab, see README: Performance): a write is one Raft
proposal, a few milliseconds; a document may be a few hundred KB (Raft refuses a message
over about 1.5 MB), and documents are bounded far below that (model.trim). Writes need a
Raft quorum: without one they fail with StoreUnavailable and nothing is half-written.

Other controllers' writes arrive as Docker's config events, and the configs they name
are read in batches: the first FLUSH_DELAY after a quiet spell, then at most one read
every FLUSH_EVERY while the writes keep coming, back to back while more than FLUSH_BATCH
wait. (A follower's read goes through the Raft leader's daemon: read after each event, a
fleet enrolling through another controller would cost the managers nearly a read per
write.) After the event stream breaks, every document is read again. A write of our own
is not read back (its event is skipped, and its new version is learnt at the next read):
with a fleet enrolling, those reads would cost the controller as much as the writes.
Docker drops events for a slow subscriber without breaking the stream, and a lost event
of ours would let the next event of that config (another controller's write) pass for
ours: so every REREAD_EVERY seconds the whole store is listed again, and what changed
since it was last read is handed on (the newer version wins). Only documents whose
version moved are parsed, so a re-read of 5,000 unchanged documents costs about one
listing (see README: Every manager runs the controller).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.wire import safejson
from controller.dockerapi import NO_LEADER, APIError, DockerAPI, DockerError, NotFound
from controller.state.backend import (
    Changed,
    Conflict,
    Stored,
    StoreUnavailable,
    TooLarge,
    dump,
)
from controller.state.shelves import (
    GATHER,
    SHELF_DOCS,
    SHELF_PREFIX,
    Shelf,
    is_shelf,
    read_shelf,
    shelf_labels,
    shelf_name,
    shelf_number,
    shelved,
)

log = logging.getLogger(__name__)

PREFIX = "swarm-enroll-"
STATE_LABEL = "swarm-enroll.state"
KEY_LABEL = "swarm-enroll.key"
DOC_LABEL = "swarm-enroll.doc"
DATA = b"swarm-enroll cluster state: the document is in the label swarm-enroll.doc"
FLUSH_DELAY = 0.05  # seconds events are gathered before the configs they name are read
FLUSH_EVERY = 0.1  # seconds between two reads while other controllers' writes keep coming
FLUSH_BATCH = 100
OWN_EVENT_WAIT = 30.0  # seconds after which our write's event is no longer expected
REREAD_EVERY = 60.0  # seconds between two listings of the whole store
SHELF_ATTEMPTS = 20  # writes of one group to the open shelf before giving up
LOWER_INSPECTS = 4  # lower shelves read one by one; more are listed in one call
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds before a failed read is tried again (doubling)
_UNAVAILABLE = (*NO_LEADER, "deadline exceeded", "unavailable", "not a swarm manager",
                "lost leader")


def config_name(key: str) -> str:
    """Config names are at most 64 characters; keys (hostnames) can be longer."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def _unavailable(exc: Exception) -> StoreUnavailable:
    text = str(getattr(exc, "explanation", "") or exc)
    return StoreUnavailable(f"the swarm's store refused: {text[:300]}")


def _object(text: str) -> None:
    """ValueError unless a document's text is a JSON object."""
    if not isinstance(safejson.loads(text), dict):  # nesting bounded: no RecursionError
        raise ValueError("not a swarm-enroll document (not a JSON object)")


def _is_unavailable(exc: APIError) -> bool:
    """No Raft leader to answer (a quorum lost, an election under way), or this node no
    longer a manager: the store cannot be read or written here now."""
    text = f"{exc.explanation} {exc}".lower()
    return any(mark in text for mark in _UNAVAILABLE)


@dataclass
class _Waiting:
    """A new hostname's first document, waiting to be written with others (shelves)."""

    key: str
    text: str
    outcome: Stored | BaseException | None = None


class SwarmBackend:
    """`shelve` says whether new hostnames' documents may go on shelves now (every
    controller reading them; see controller.state.shelves): without it, or while it says
    no, each document gets a config of its own."""

    def __init__(self, api: DockerAPI, shelve: Callable[[], bool] | None = None) -> None:
        self.api = api  # the local manager's
        self.shelve = shelve
        self._keys_at: dict[str, set[str]] = {}  # config id -> the keys it holds
        self._id_of: dict[str, str] = {}  # key -> the id of the config that holds it
        self._shelves: dict[str, Shelf] = {}  # config id -> the shelf as last read
        self._own: dict[str, list[float]] = {}  # config name -> our writes' events due
        self._lock = threading.Lock()
        self._events: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dirty: dict[str, None] = {}  # configs events named, to read again, oldest first
        self._flusher: threading.Thread | None = None
        self._versions: dict[str, int] = {}  # config id -> the version last read
        self._group = threading.Condition()
        self._queue: list[_Waiting] = []  # first documents waiting for the next shelf write
        self._shelving = False  # a thread is writing a group
        self._closed_upto = 0  # every shelf up to this number is known closed (or absent)
        self._floor: dict[str, int] = {}  # config id -> the oldest version a read may have
        self._removed: dict[str, float] = {}  # config id -> when its removal was heard
        self._placed: dict[str, int] = {}  # key -> the version that put it where it is
        self._newest = 0  # the newest version read of any config
        self._changed: Changed | None = None  # whoever follows the store (watch)

    # ---- reading ------------------------------------------------------------------------

    def _parse(self, config: dict[str, Any]) -> tuple[list[Stored], Shelf | None]:
        """The documents in a config (a shelf's, or the one of its own); ValueError if it
        holds none (or is malformed)."""
        if is_shelf(config):
            shelf = read_shelf(config)
            docs = []
            for key, text in shelf.docs.items():  # (all kept on the shelf when rewritten)
                try:
                    _object(text)
                except ValueError as exc:
                    log.warning("ignoring %s on shelf %s: %s", key, shelf.number, exc)
                    continue
                docs.append(Stored(key, shelf.version or 0, text))
            return docs, shelf
        try:
            labels = config["Spec"].get("Labels") or {}
            text = labels[DOC_LABEL]
            stored = Stored(str(labels[KEY_LABEL]), int(config["Version"]["Index"]), text)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a swarm-enroll document ({type(exc).__name__})") from None
        _object(text)
        return [stored], None

    def _note(self, config_id: str, keys: set[str], shelf: Shelf | None,
              version: int | None, written: int | None = None) -> list[str] | None:
        """Remember where the documents of a config are, from a read at `version` or from
        our own write made on version `written` (0: created); returns the keys that left
        it since (and are nowhere else we know of): gone, for whoever follows the store.
        A read older than what memory holds of the config (a listing begun before a
        write, handled after it) is ignored: None."""
        with self._lock:
            if config_id in self._removed:
                return None
            floor = self._floor.get(config_id, 0)
            if written is not None:
                if floor > written:  # a read after our write is in memory already
                    return []
                self._floor[config_id], self._versions[config_id] = written + 1, None
                stamp = self._newest + 1  # (newer than every read before it)
            else:
                if version is None or version < floor:
                    return None
                self._floor[config_id] = self._versions[config_id] = version
                self._newest, stamp = max(self._newest, version), version
            left = self._keys_at.get(config_id, set()) - keys
            self._keys_at[config_id] = keys
            for key in keys:  # a key that moved: the newer config holds it
                where = self._id_of.get(key)
                if where is None or where == config_id or self._placed.get(key, 0) <= stamp:
                    self._id_of[key], self._placed[key] = config_id, stamp
            if shelf is not None:
                self._shelves[config_id] = shelf
            gone = [k for k in left if self._id_of.get(k) == config_id]
            for key in gone:
                del self._id_of[key]
                self._placed.pop(key, None)
        return gone

    def _forget(self, config_id: str) -> list[str]:
        """A config removed: the keys it held (those nowhere else since). A late read of
        it is ignored from now on (ids are never used again)."""
        with self._lock:
            keys = self._keys_at.pop(config_id, set())
            self._shelves.pop(config_id, None)
            self._versions.pop(config_id, None)
            self._floor.pop(config_id, None)
            self._removed[config_id] = time.monotonic()
            gone = [k for k in keys if self._id_of.get(k) == config_id]
            for key in gone:
                del self._id_of[key]
                self._placed.pop(key, None)
        return gone

    def _documents(self, configs: list[dict[str, Any]]) -> tuple[list[Stored], list[str]]:
        """The documents in `configs`, each one's version noted, and the keys that left the
        shelves among them; a malformed config is logged and skipped, never the rest with
        it."""
        held: list[tuple[str, Stored]] = []
        gone: list[str] = []
        for config in configs:
            try:
                docs, shelf = self._parse(config)
            except ValueError as exc:
                log.warning("ignoring config %s: %s", config.get("ID", "?"), exc)
                with self._lock:  # not parsed again until it changes
                    self._versions[config.get("ID", "")] = _version(config)
                continue
            config_id = config.get("ID", "")
            left = self._note(config_id, {d.key for d in docs}, shelf,
                              _number(_version(config)))
            if left is not None:  # (None: older than memory's copy)
                gone += left
                held += [(config_id, d) for d in docs]
        with self._lock:  # where each key is now: a key found on two configs of the batch
            found = [d for i, d in held if self._id_of.get(d.key) == i]  # is handed on once,
            gone = [k for k in dict.fromkeys(gone) if k not in self._id_of]  # never as gone
        return found, gone

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotFound:
            raise
        except APIError as exc:
            if _is_unavailable(exc):
                raise _unavailable(exc) from None
            if "too large" in str(exc):
                raise TooLarge(str(exc.explanation or exc)[:300]) from None
            raise
        except DockerError as exc:  # the daemon itself is down
            raise _unavailable(exc) from None

    def load_all(self) -> list[Stored]:
        configs = self._call(self.api.configs, filters={"label": [STATE_LABEL]})
        return self._documents(configs)[0]

    def _inspect(self, ref: str, again: bool = True) -> tuple[list[Stored], Shelf | None] | None:
        """A config (by name or id) read afresh, noted and handed on; None if there is no
        such config (one we knew is forgotten)."""
        try:
            config = self._call(self.api.inspect_config, ref)
        except NotFound:
            number = shelf_number(ref)
            with self._lock:
                ids = [i for i, s in self._shelves.items() if s.number == number]
                ids += [ref] if ref in self._keys_at else []
            self._hand_on([], [k for i in ids for k in self._forget(i)])
            return None
        docs, shelf = self._parse(config)
        gone = self._note(config.get("ID", ""), {d.key for d in docs}, shelf,
                          _number(_version(config)))
        if gone is None and again:  # older than memory's copy: a newer read is to be had
            return self._inspect(ref, again=False)
        if gone is not None:
            self._hand_on(docs, gone)
        return docs, shelf

    def _hand_on(self, found: list[Stored], gone: list[str]) -> None:
        """What a read outside the events found, for whoever follows the store: the
        events' read of the same version would find it noted already and hand nothing on."""
        changed = self._changed
        if changed is None:
            return
        for stored in found:
            _tell(changed, stored.key, stored)
        for key in gone:
            _tell(changed, key, None)

    def get(self, key: str) -> Stored | None:
        """Where memory says it is, else on the open shelf (made again since), else in a
        config of its own."""
        with self._lock:
            where = self._id_of.get(key)
        if where and (stored := self._read_key(where, key)):
            return stored
        if self.shelve is not None and shelved(key):
            shelf = self._open_shelf()  # (reads any lower shelf not known closed too)
            if key in shelf.docs:
                return Stored(key, shelf.version or 0, shelf.docs[key])
            with self._lock:
                found = self._id_of.get(key)
            if found and found != where and (stored := self._read_key(found, key)):
                return stored
        if stored := self._read_key(config_name(key), key):
            return stored
        with self._lock:
            if where is not None and self._id_of.get(key) == where:
                del self._id_of[key]
        return None

    def _read_key(self, ref: str, key: str) -> Stored | None:
        """The document of `key` in the config `ref`, read afresh; None if not there."""
        read = self._inspect(ref)
        return next((stored for stored in read[0] if stored.key == key), None) if read \
            else None

    # ---- writing ------------------------------------------------------------------------

    def create(self, key: str, body: dict[str, Any]) -> Stored:
        text = dump(body)
        if self.shelve is not None and shelved(key):
            use = bool(self._shelves) or self.shelve()  # (once in use, for good)
            if not use:  # in use elsewhere already?
                configs = self._call(self.api.configs, filters={"name": [shelf_name(1)]})
                self._hand_on(*self._documents(configs))
                use = bool(self._shelves)
            if use:
                return self._shelve(key, text)
        with self._lock:
            if self._id_of.get(key) in self._shelves:
                raise Conflict(key)  # on a shelf (written while shelves were in use)
        labels = {STATE_LABEL: "1", KEY_LABEL: key, DOC_LABEL: text}
        try:
            with self._expecting(config_name(key)):
                created = self._call(self.api.create_config, config_name(key), DATA, labels)
        except APIError as exc:
            if exc.status_code == 409 or "already exists" in str(exc):
                raise Conflict(key) from None
            raise
        self._note(created["ID"], {key}, None, None, written=0)
        return Stored(key, 0, text, exact=False)

    def update(self, old: Stored, body: dict[str, Any]) -> Stored:
        text = dump(body)
        with self._lock:
            where = self._id_of.get(old.key, "")
            shelf = self._shelves.get(where)
        if shelf is not None:
            self._rewrite(where, old, text)
        else:
            name = config_name(old.key)
            self._swap(old, name, {STATE_LABEL: "1", KEY_LABEL: old.key, DOC_LABEL: text})
        return Stored(old.key, old.version, text, exact=False)

    def _swap(self, old: Stored, name: str, labels: dict[str, str]) -> None:
        """The labels of config `name` written under the version `old` was read at."""
        try:
            with self._expecting(name):
                self._call(self.api.update_config, name, old.version,
                           {"Name": name, "Labels": labels})
        except NotFound:
            raise Conflict(old.key) from None
        except APIError as exc:
            if "out of sequence" in str(exc):
                raise Conflict(old.key) from None
            raise

    def delete(self, old: Stored) -> None:
        """Docker removes a config without a version check: this one checks, then removes
        (a write in between is lost only for the document being deleted anyway). A document
        on a shelf leaves it under the shelf's version (the shelf stays, empty or not: its
        number is never used again)."""
        with self._lock:
            where = self._id_of.get(old.key, "")
            on_shelf = where in self._shelves
        if on_shelf:
            self._rewrite(where, old, None)
            return
        current = self.get(old.key)
        if current is None or current.version != old.version:
            raise Conflict(old.key)
        with contextlib.suppress(NotFound):
            self._call(self.api.remove_config, config_name(old.key))

    def _rewrite(self, config_id: str, old: Stored, text: str | None) -> None:
        """Change (or with None remove) one document on its shelf, under the version it was
        read at: the shelf's. A shelf that grows full this way is closed by this write."""
        with self._lock:
            shelf = self._shelves.get(config_id)
        if shelf is None or shelf.version != old.version or old.key not in shelf.docs:
            read = self._inspect(config_id)
            shelf = read[1] if read is not None else None
            if shelf is None or shelf.version != old.version or old.key not in shelf.docs:
                raise Conflict(old.key)
        docs = dict(shelf.docs)
        if text is None:
            del docs[old.key]
        else:
            docs[old.key] = text
        closed = shelf.closed or shelf.full_with(docs)  # (closed for good, once)
        self._swap(old, shelf.name, shelf_labels(STATE_LABEL, docs, closed))
        self._note(config_id, set(docs), Shelf(shelf.number, config_id, None, closed, docs),
                   None, written=old.version)

    # ---- new hostnames, several to a write (controller.state.shelves) --------------------

    def _shelve(self, key: str, text: str) -> Stored:
        """Write this first document with the others that arrive meanwhile: one thread
        writes for the group, the others wait for its outcome."""
        me = _Waiting(key, text)
        with self._group:
            self._queue.append(me)
            while me.outcome is None and self._shelving:
                self._group.wait()
            lead = me.outcome is None
            if lead:
                self._shelving = True
        if lead:
            self._stop.wait(GATHER)  # those arriving meanwhile share this write
            with self._group:  # (a full shelf's worth at most: shelves stay bounded)
                others = [w for w in self._queue if w is not me]
                group = [me, *others[:SHELF_DOCS - 1]]
                self._queue = others[SHELF_DOCS - 1:]
            try:
                self._write_group(group)
            finally:
                with self._group:
                    for waiting in group:
                        if waiting.outcome is None:
                            waiting.outcome = StoreUnavailable("the shelf write did not end")
                    self._shelving = False
                    self._group.notify_all()
        if isinstance(me.outcome, BaseException):
            raise me.outcome
        assert me.outcome is not None
        return me.outcome

    def _write_group(self, group: list[_Waiting]) -> None:
        """Put each document of the group on the open shelf, or settle it as a Conflict
        (its key taken) or the store's error."""
        waiting = list(group)
        for _ in range(SHELF_ATTEMPTS):
            try:  # with the configs of their own these keys would have: a hostname
                # written before shelves, or by a controller not using them yet, that
                # memory has not heard of
                shelf = self._open_shelf([config_name(w.key) for w in waiting])
            except Exception as exc:  # no quorum, the daemon down: each says so
                for w in waiting:
                    w.outcome = exc
                return
            free: list[_Waiting] = []
            for w in waiting:
                if w.key in shelf.docs or self._held(w.key) or w.key in {f.key for f in free}:
                    w.outcome = Conflict(w.key)
                else:
                    free.append(w)
            if not free:
                return
            docs = {**shelf.docs, **{w.key: w.text for w in free}}  # the group at once
            closed = shelf.full_with(docs)
            labels = shelf_labels(STATE_LABEL, docs, closed)
            try:
                with self._expecting(shelf.name):
                    if shelf.config_id:
                        self._call(self.api.update_config, shelf.name, shelf.version,
                                   {"Name": shelf.name, "Labels": labels})
                        config_id = shelf.config_id
                    else:
                        config_id = self._call(self.api.create_config, shelf.name, DATA,
                                               labels)["ID"]
            except (NotFound, APIError) as exc:
                if isinstance(exc, NotFound) or exc.status_code == 409 or any(
                        m in str(exc) for m in ("out of sequence", "already exists")):
                    waiting = free  # another controller wrote the shelf first: read again
                    continue
                for w in free:
                    w.outcome = exc
                return
            except Exception as exc:
                for w in free:
                    w.outcome = exc
                return
            version = shelf.version or 0  # (0: made by this write)
            self._note(config_id, set(docs), Shelf(shelf.number, config_id, None, closed, docs),
                       None, written=version)
            for w in free:
                w.outcome = Stored(w.key, version, w.text, exact=False)
            return
        for w in waiting:
            w.outcome = Conflict(w.key)  # the shelf kept changing: the caller tries again

    def _held(self, key: str) -> bool:
        """Whether a document of this key is stored anywhere we know of (memory may lag:
        a key since removed reads as held, the caller reads it again and tries anew)."""
        with self._lock:
            return key in self._id_of

    def _open_shelf(self, also: list[str] | None = None) -> Shelf:
        """The shelf that takes new documents, read afresh (a new number if every shelf is
        closed), after reading again any lower shelf that memory does not hold at a closed
        version: closed shelves take no new names, so a name on none of them and not on
        this one is free. The configs named `also` are read afresh in the same call."""
        with self._lock:
            number = max((s.number for s in self._shelves.values()), default=1)
        names = [shelf_name(number), *(also or [])]
        configs = [c for c in self._call(self.api.configs, filters={"name": names})
                   if (c.get("Spec") or {}).get("Name") in names]
        self._hand_on(*self._documents(configs))
        config = next((c for c in configs if c["Spec"]["Name"] == names[0]), None)
        passed: set[int] = set()
        while True:
            if config is None:
                shelf = Shelf(number)  # to be made
                break
            try:
                shelf = read_shelf(config)
            except ValueError as exc:  # made by hand: passed over, as if closed
                log.warning("passing over config %s: %s", shelf_name(number), exc)
                passed.add(number)
            else:
                if not shelf.closed:
                    break
            number += 1
            try:
                config = self._call(self.api.inspect_config, shelf_name(number))
            except NotFound:
                config = None
            else:
                self._hand_on(*self._documents([config]))
        with self._lock:
            closed = {s.number for s in self._shelves.values() if s.closed}
            lower = [n for n in range(self._closed_upto + 1, number)
                     if n not in closed and n not in passed]
        if len(lower) > LOWER_INSPECTS:  # (a restart, or a shelf numbered by hand): at once
            listed = self._call(self.api.configs, filters={"name": [SHELF_PREFIX]})
            self._hand_on(*self._documents(listed))
        else:
            for n in lower:  # memory had it open (lagging), or not at all
                try:
                    self._inspect(shelf_name(n))
                except ValueError as exc:  # made by hand: passed over
                    log.warning("passing over config %s: %s", shelf_name(n), exc)
        with self._lock:
            self._closed_upto = max(self._closed_upto, number - 1)
        return shelf

    @contextlib.contextmanager
    def _expecting(self, name: str) -> Iterator[None]:
        """Our write will come back as an event, which needs no read (memory has it). It is
        expected before the write is sent: its event may arrive before Docker's answer, and
        an expectation made after it would swallow the next writer's event instead. A
        write that fails expects nothing (one that failed only to answer is read back)."""
        now = time.monotonic()
        with self._lock:
            own = [t for t in self._own.get(name, []) if now - t < OWN_EVENT_WAIT]
            self._own[name] = [*own, now]
        try:
            yield
        except BaseException:
            with self._lock:
                left = [t for t in self._own.get(name, []) if t != now]
                if left:
                    self._own[name] = left
                else:
                    self._own.pop(name, None)
            raise

    # ---- other controllers' writes ------------------------------------------------------

    def watch(self, changed: Changed) -> None:
        self._changed = changed
        self._thread = threading.Thread(target=self._follow, args=(changed,),
                                        name="state-events", daemon=True)
        self._thread.start()
        threading.Thread(target=self._reread, args=(changed,), name="state-reread",
                         daemon=True).start()

    def _reread(self, changed: Changed) -> None:
        while not self._stop.wait(REREAD_EVERY):
            try:
                self._resync(changed, moved_only=True)
            except Exception as exc:  # no quorum now: the next round reads it all
                log.info("cannot read the state again now (%s)", type(exc).__name__)

    def _follow(self, changed: Changed) -> None:
        first = True
        while not self._stop.is_set():
            try:
                self._events = self.api.events(filters={"type": ["config"]})
                if not first:  # what happened while we did not listen
                    self._resync(changed)
                first = False
                for event in self._events:
                    if self._stop.is_set():
                        return
                    self._event(event, changed)
            except Exception as exc:  # the daemon restarted, the stream broke
                if not self._stop.is_set():
                    log.info("config events stream ended (%s); reading the state again",
                             type(exc).__name__)
            self._stop.wait(2.0)

    def _event(self, event: dict[str, Any], changed: Changed) -> None:
        actor = event.get("Actor") or {}
        config_id = actor.get("ID", "")
        name = (actor.get("Attributes") or {}).get("name", "")
        if name and not name.startswith(PREFIX):
            return
        if event.get("Action") == "remove":
            # (not a key since made again elsewhere: a late event of an old config)
            for key in self._forget(config_id):
                _tell(changed, key, None)
            return
        now = time.monotonic()
        with self._lock:
            own = [t for t in self._own.pop(name, []) if now - t < OWN_EVENT_WAIT]
            if own:  # the event of one of our writes (each write makes exactly one)
                if own[1:]:
                    self._own[name] = own[1:]
                return
            self._dirty[config_id] = None
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush, args=(changed,),
                                                 name="state-refresh", daemon=True)
                self._flusher.start()

    def _flush(self, changed: Changed) -> None:
        """Read what the events named, many configs in one call: a fleet enrolling makes
        hundreds of writes a second, and one read each would double the daemon's work."""
        wait, retry = FLUSH_DELAY, RETRY_FIRST
        while True:
            self._stop.wait(wait)
            with self._lock:
                dirty = list(self._dirty)  # the oldest first: none waits out a backlog
                ids, self._dirty = dirty[:FLUSH_BATCH], dict.fromkeys(dirty[FLUSH_BATCH:])
                if not ids:
                    self._flusher = None
                    return
                wait = 0.0 if self._dirty else FLUSH_EVERY  # a full batch: the rest at once
            try:
                configs = self._call(self.api.configs, filters={"id": ids})
            except (APIError, StoreUnavailable) as exc:
                # No leader (a failover): the configs are read again once there is one.
                with self._lock:
                    self._dirty = {**dict.fromkeys(ids), **self._dirty}
                log.info("cannot read %d changed configs now (%s); trying again in %.1fs",
                         len(ids), type(exc).__name__, retry)
                if self._stop.wait(retry):
                    with self._lock:
                        self._flusher = None
                    return
                retry, wait = min(retry * 2, RETRY_MOST), 0.0
                continue
            retry = RETRY_FIRST
            found, gone = self._documents(configs)
            for stored in found:
                _tell(changed, stored.key, stored)
            for key in gone:
                _tell(changed, key, None)

    def _resync(self, changed: Changed, moved_only: bool = False) -> None:
        """Read every document again and hand on what changed; `moved_only` parses only
        the configs whose version moved since they were last read."""
        with self._lock:
            known = dict(self._id_of)
            versions = dict(self._versions) if moved_only else {}
            if not moved_only:  # their events may be lost with the stream: all is read now
                self._own.clear()
        began = time.monotonic()
        configs = self._call(self.api.configs, filters={"label": [STATE_LABEL]})
        listed = {config.get("ID", "") for config in configs}
        with self._lock:
            self._versions = {i: v for i, v in self._versions.items() if i in listed}
            # no read begun before a removal can still come: the ids may go
            self._removed = {i: t for i, t in self._removed.items() if t >= began - 60}
        fresh, left = self._documents([c for c in configs
                                       if versions.get(c.get("ID", "")) != _version(c)])
        for stored in fresh:
            _tell(changed, stored.key, stored)
        gone = set(left)
        for config_id in {known[k] for k in known} - listed:
            gone.update(self._forget(config_id))
        for key in gone:
            _tell(changed, key, None)

    def close(self) -> None:
        self._stop.set()
        events = self._events
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()


def _version(config: dict[str, Any]) -> Any:
    return (config.get("Version") or {}).get("Index")


def _number(version: Any) -> int | None:
    return version if isinstance(version, int) else None


def _tell(changed: Changed, key: str, stored: Stored | None) -> None:
    """Hand one document on; whatever goes wrong with it must not stop the thread that
    follows the store, nor lose the documents after it."""
    try:
        changed(key, stored)
    except Exception:
        log.exception("could not take in %s", key)
