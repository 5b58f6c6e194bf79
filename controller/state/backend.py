"""Where the documents live: any store that can compare-and-swap one document.

A backend keeps JSON documents by key, each with a version that changes on every
write. `update` and `delete` only succeed on the version that was read, and `create`
only when the key is free; otherwise they raise Conflict and the caller reads again.
That one primitive is all the shared state needs, whether the documents are rows of a
SQLite file (one controller) or objects in the swarm's own Raft store (every manager).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Conflict(Exception):
    """The document changed (or appeared, or went) since it was read."""


class StoreUnavailable(Exception):
    """The store cannot be read or written now (no quorum, daemon down); the message says
    why in plain words."""


class TooLarge(Exception):
    """The store refuses a document this large (documents are bounded far below it)."""


def dump(body: dict[str, Any]) -> str:
    """A document as the store keeps it."""
    return json.dumps(body, sort_keys=True)


@dataclass(frozen=True)
class Stored:
    """A document as written, kept as its JSON text: with a thousand Pis a controller holds
    a thousand documents, and the text of one costs a fifth of its parsed objects and
    leaves the interpreter's small-object arenas free to be given back after a burst
    (README: Performance). `body` parses it: a fresh copy each time.

    `exact=False`: a write whose new version the store did not say (asking would cost a
    read per write); `version` is then the one it replaced, and the document must be read
    again before it is written on (State does)."""

    key: str
    version: int
    text: str
    exact: bool = True

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.text)  # type: ignore[no-any-return]


Changed = Callable[[str, "Stored | None"], None]  # key, the new document or None if gone


class Backend(Protocol):
    def load_all(self) -> list[Stored]: ...

    def get(self, key: str) -> Stored | None: ...

    def create(self, key: str, body: dict[str, Any]) -> Stored: ...

    def update(self, old: Stored, body: dict[str, Any]) -> Stored: ...

    def delete(self, old: Stored) -> None: ...

    def watch(self, changed: Changed) -> None:
        """Call `changed` for writes made elsewhere (other controllers), if the backend
        can tell; a single-process backend never needs to."""

    def close(self) -> None: ...
