"""Files every controller must read alike (the hostname rules, the baseline), kept in the
shared state.

Two controllers with different rules would decide differently on the same Pi, and two
with different baselines would take turns undoing each other. So the text lives in one
document (`shared/<name>`). It is seeded from the first controller's local file; after
that, an edit of the local file on any manager whose controller runs (or `enrollctl
baseline apply --file`) is checked and, only if it is valid, becomes the text every
controller uses; a controller that starts writes the shared text to its file. A file with
an error changes nothing, and says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from controller.state import State, Unchanged

log = logging.getLogger(__name__)

T = TypeVar("T")


class SharedFile(Generic[T]):
    def __init__(self, state: State, name: str, local: Path,
                 parse: Callable[[str, str], T],
                 parse_new: Callable[[str, str], T] | None = None) -> None:
        self.state = state
        self.name = name
        self.key = f"shared/{name}"
        self.local = local
        self.parse = parse  # (text, where it comes from) -> parsed; raises on errors
        # A text about to be taken may be held to more than one already shared (which an
        # upgrade must still read): its parser.
        self.parse_new = parse_new or parse
        self._mtime = self._local_mtime()
        self._cache: tuple[int, T] | None = None
        # An edit of the local file that was not taken (invalid): what was wrong with it,
        # until the file is fixed or the shared text replaces it.
        self.local_error: Exception | None = None
        if self.state.doc(self.key) is None and local.exists():
            # the file in use until now: read as it is (an upgrade never stops a start)
            self.replace(local.read_text(), f"seeded from {local}", seed=True)
        elif self.state.doc(self.key) is not None:
            self._mirror(self.text())  # a controller that starts takes the shared text

    def _local_mtime(self) -> float:
        try:
            return self.local.stat().st_mtime
        except FileNotFoundError:
            return -1.0

    def text(self) -> str:
        body = self.state.doc(self.key)
        if body is None:
            raise FileNotFoundError(f"no {self.name} yet in the shared state, and no {self.local}")
        return str(body["text"])

    def describe(self) -> str:
        return f"{self.name} in the cluster's shared state (edit {self.local} or apply a file)"

    def version(self) -> float:
        self.current()  # a local edit is taken first
        return float(self.state.doc_version(self.key))

    def current(self) -> T:
        """The parsed shared text; a changed local file is taken first, if it is valid."""
        mtime = self._local_mtime()
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.replace(self.local.read_text(), f"{self.local} changed")
                self.local_error = None
            except Exception as exc:  # a bad edit: the shared text stays as it is
                log.error("%s: not taken: %s", self.local, exc)
                self.local_error = exc
        version = self.state.doc_version(self.key)
        if self._cache is None or self._cache[0] != version:
            text = self.text()
            self._cache = (version, self.parse(text, self.describe()))
            self._warn_if_not_new(text)
            self._mirror(text)
        return self._cache[1]

    def _warn_if_not_new(self, text: str) -> None:
        """A shared text taken before a check of new texts existed (or seeded from a file
        in use) is served as it is; what that check finds is said once per version."""
        if self.parse_new is self.parse:
            return
        try:
            self.parse_new(text, self.describe())
        except Exception as exc:
            log.warning("%s: served as it is, but an edit like it would be refused: %s",
                        self.name, exc)

    def _mirror(self, text: str) -> None:
        """Keep the local file equal to the shared text, so that an edit starts from it."""
        try:
            if self.local.exists() and self.local.read_text() == text:
                return
            tmp = self.local.with_name(f".{self.local.name}.tmp")
            tmp.write_text(text)
            tmp.replace(self.local)
            self._mtime = self._local_mtime()
            self.local_error = None
        except OSError as exc:
            log.warning("cannot update %s from the shared %s: %s", self.local, self.name, exc)

    def replace(self, text: str, why: str = "", seed: bool = False) -> T:
        """Check the text, then make it the shared one (raises, changing nothing, if bad)."""
        parsed = (self.parse if seed else self.parse_new)(text, str(self.local))

        def change(body: dict[str, str] | None) -> dict[str, str]:
            if body is not None and body.get("text") == text:
                raise Unchanged(None)
            return {"text": text, "at": str(time.time())}

        self.state.update_doc(self.key, change)
        if why:
            log.info("%s: %s", self.name, why)
        return parsed
