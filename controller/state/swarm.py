"""The documents in the swarm's own Raft store, through the local manager's Docker API.

Each document is a swarm config object (`swarm-enroll-<hash of its key>`), the document
itself in a label: configs are stored by every manager in the replicated, encrypted Raft
log, only managers serve them, and their labels can be updated under the object's
version: Docker refuses an update made on an older version ("update out of sequence"),
which is the compare-and-swap the state needs. A config is sent to a worker only when a
service uses it, and no service uses these. This is docker/infrakit's idea of keeping a
controller's state in the swarm itself (it kept one snapshot in the swarm's own labels);
here there is one object per document, so that writers of different documents never
wait for each other.

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
from collections.abc import Iterator
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
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds before a failed read is tried again (doubling)
_UNAVAILABLE = (*NO_LEADER, "deadline exceeded", "unavailable", "not a swarm manager",
                "lost leader")


def config_name(key: str) -> str:
    """Config names are at most 64 characters; keys (hostnames) can be longer."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40]


def _unavailable(exc: Exception) -> StoreUnavailable:
    text = str(getattr(exc, "explanation", "") or exc)
    return StoreUnavailable(f"the swarm's store refused: {text[:300]}")


def _is_unavailable(exc: APIError) -> bool:
    """No Raft leader to answer (a quorum lost, an election under way), or this node no
    longer a manager: the store cannot be read or written here now."""
    text = f"{exc.explanation} {exc}".lower()
    return any(mark in text for mark in _UNAVAILABLE)


class SwarmBackend:
    def __init__(self, api: DockerAPI) -> None:
        self.api = api  # the local manager's
        self._ids: dict[str, str] = {}  # config id -> key
        self._id_of: dict[str, str] = {}  # key -> config id
        self._own: dict[str, list[float]] = {}  # config name -> our writes' events due
        self._lock = threading.Lock()
        self._events: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dirty: dict[str, None] = {}  # configs events named, to read again, oldest first
        self._flusher: threading.Thread | None = None
        self._versions: dict[str, int] = {}  # config id -> the version last read

    # ---- reading ------------------------------------------------------------------------

    def _stored(self, config: dict[str, Any]) -> Stored:
        """The document in a config; ValueError if it is none (or malformed)."""
        try:
            labels = config["Spec"].get("Labels") or {}
            text = labels[DOC_LABEL]
            body = safejson.loads(text)  # nesting bounded: no RecursionError
            stored = Stored(str(labels[KEY_LABEL]), int(config["Version"]["Index"]), text)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a swarm-enroll document ({type(exc).__name__})") from None
        if not isinstance(body, dict):
            raise ValueError("not a swarm-enroll document (not a JSON object)")
        with self._lock:
            self._ids[config["ID"]] = stored.key
            self._id_of[stored.key] = config["ID"]
            self._versions[config["ID"]] = stored.version
        return stored

    def _documents(self, configs: list[dict[str, Any]]) -> list[Stored]:
        """The documents in `configs`, each one's version noted; a malformed one is logged
        and skipped, never the rest with it."""
        found = []
        for config in configs:
            try:
                found.append(self._stored(config))
            except ValueError as exc:
                log.warning("ignoring config %s: %s", config.get("ID", "?"), exc)
                with self._lock:  # not parsed again until it changes
                    self._versions[config.get("ID", "")] = _version(config)
        return found

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
        return self._documents(self._call(self.api.configs, filters={"label": [STATE_LABEL]}))

    def get(self, key: str) -> Stored | None:
        try:
            return self._stored(self._call(self.api.inspect_config, config_name(key)))
        except NotFound:
            return None

    # ---- writing ------------------------------------------------------------------------

    def create(self, key: str, body: dict[str, Any]) -> Stored:
        text = dump(body)
        labels = {STATE_LABEL: "1", KEY_LABEL: key, DOC_LABEL: text}
        try:
            with self._expecting(config_name(key)):
                created = self._call(self.api.create_config, config_name(key), DATA, labels)
        except APIError as exc:
            if exc.status_code == 409 or "already exists" in str(exc):
                raise Conflict(key) from None
            raise
        with self._lock:
            self._ids[created["ID"]] = key
            self._id_of[key] = created["ID"]
        return Stored(key, 0, text, exact=False)

    def update(self, old: Stored, body: dict[str, Any]) -> Stored:
        name = config_name(old.key)
        text = dump(body)
        spec = {"Name": name, "Labels": {STATE_LABEL: "1", KEY_LABEL: old.key, DOC_LABEL: text}}
        try:
            with self._expecting(name):
                self._call(self.api.update_config, name, old.version, spec)
        except NotFound:
            raise Conflict(old.key) from None
        except APIError as exc:
            if "out of sequence" in str(exc):
                raise Conflict(old.key) from None
            raise
        return Stored(old.key, old.version, text, exact=False)

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

    def delete(self, old: Stored) -> None:
        """Docker removes a config without a version check: this one checks, then removes
        (a write in between is lost only for the document being deleted anyway)."""
        current = self.get(old.key)
        if current is None or current.version != old.version:
            raise Conflict(old.key)
        with contextlib.suppress(NotFound):
            self._call(self.api.remove_config, config_name(old.key))

    # ---- other controllers' writes ------------------------------------------------------

    def watch(self, changed: Changed) -> None:
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
            with self._lock:
                key = self._ids.pop(config_id, "")
                self._versions.pop(config_id, None)
                current = self._id_of.get(key) == config_id
                if current:
                    del self._id_of[key]
            if current:  # not a late event of a config the key has since been made again as
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
            for stored in self._documents(configs):
                _tell(changed, stored.key, stored)

    def _resync(self, changed: Changed, moved_only: bool = False) -> None:
        """Read every document again and hand on what changed; `moved_only` parses only
        the configs whose version moved since they were last read."""
        with self._lock:
            known = dict(self._id_of)
            versions = dict(self._versions) if moved_only else {}
            if not moved_only:  # their events may be lost with the stream: all is read now
                self._own.clear()
        configs = self._call(self.api.configs, filters={"label": [STATE_LABEL]})
        listed = {config.get("ID", "") for config in configs}
        with self._lock:
            self._versions = {i: v for i, v in self._versions.items() if i in listed}
        fresh = self._documents([c for c in configs
                                 if versions.get(c.get("ID", "")) != _version(c)])
        for stored in fresh:
            _tell(changed, stored.key, stored)
        for key in known.keys() - {s.key for s in fresh}:
            with self._lock:
                gone = known[key] not in listed and self._id_of.get(key) == known[key]
                if gone:  # (and not made again meanwhile)
                    del self._id_of[key]
                    self._ids.pop(known[key], None)
            if gone:
                _tell(changed, key, None)

    def close(self) -> None:
        self._stop.set()
        events = self._events
        if events is not None:
            with contextlib.suppress(Exception):
                events.close()


def _version(config: dict[str, Any]) -> Any:
    return (config.get("Version") or {}).get("Index")


def _tell(changed: Changed, key: str, stored: Stored | None) -> None:
    """Hand one document on; whatever goes wrong with it must not stop the thread that
    follows the store, nor lose the documents after it."""
    try:
        changed(key, stored)
    except Exception:
        log.exception("could not take in %s", key)
