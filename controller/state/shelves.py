"""New hostnames' documents, several to one swarm config (a shelf), so that Pis enrolling
together share one Raft proposal.

Each write to the swarm's store is one Raft proposal, and a proposal costs every manager's
daemon about the same whatever its size (README: Performance): a fleet enrolling at once
spent most of its managers' CPU on one proposal per Pi. So a controller gathers the first
documents of new hostnames for a moment (GATHER) and writes them together, into the open
shelf: the highest-numbered one, until it holds SHELF_DOCS documents or SHELF_FILL bytes,
when the write that fills it closes it and the next one opens the next number.

Why one decision per name still holds: a name is only ever added to the open shelf, by a
compare-and-swap on it, after the writer read it afresh and knows every lower shelf at a
closed version (closed shelves take no new names; only their documents change or go). Two
controllers adding one name at once both write the open shelf: one write is refused ("out
of sequence"), and that writer reads it again and finds the name taken. A document stays
on its shelf for good: changing it rewrites the shelf under its version (neighbours
written meanwhile make the write refused and read again, never lost). A shelf is never
removed, even empty, so that its number is never used again.

Documents of other kinds (tokens, admins, the shared files) and hostnames stored before
shelves (one config each) keep a config of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SHELF_PREFIX = "swarm-enroll-shelf-"
SHELF_LABEL = "swarm-enroll.shelf"  # "open" or "closed"
DOC_PREFIX = "swarm-enroll.doc:"  # + the document's key: one label per document
SHELF_DOCS = 8  # documents past which a shelf takes no more (it may end with up to 15: a
# group is written whole); a host document is bounded (model.trim), and 15 of the largest
# stay under Raft's limit of about 1.5 MB per write
SHELF_FILL = 64 << 10  # bytes of documents past which a shelf takes no more
GATHER = 0.015  # seconds a new hostname's first write waits for others to share it


def shelf_name(number: int) -> str:
    return f"{SHELF_PREFIX}{number:08d}"


def shelf_number(name: str) -> int | None:
    """The number in a shelf's config name; None for any other config."""
    tail = name.removeprefix(SHELF_PREFIX)
    return int(tail) if tail != name and tail.isdigit() else None


def shelved(key: str) -> bool:
    """Whether a new document of this key goes on a shelf: hostnames' only, the documents
    a fleet enrolling creates by the hundred."""
    return key.startswith("host/")


@dataclass
class Shelf:
    """A shelf as last read (`version` None after a write of ours: not known)."""

    number: int
    config_id: str = ""  # "" for a shelf not created yet
    version: int | None = 0
    closed: bool = False
    docs: dict[str, str] = field(default_factory=dict)  # key -> the document's JSON text

    @property
    def name(self) -> str:
        return shelf_name(self.number)

    def takes_more(self) -> bool:
        """Whether a group of new documents may go on this shelf (all of it: a group is
        one write, so a shelf holds at most SHELF_DOCS - 1 + a group of SHELF_DOCS). Only
        its label says: the write that fills a shelf closes it, for good (its documents
        may shrink later, and a shelf taking names again below a newer one would let a
        name be added twice)."""
        return not self.closed

    def full_with(self, docs: dict[str, str]) -> bool:
        return len(docs) >= SHELF_DOCS or sum(map(len, docs.values())) >= SHELF_FILL


def shelf_labels(state_label: str, docs: dict[str, str], closed: bool) -> dict[str, str]:
    return {state_label: "1", SHELF_LABEL: "closed" if closed else "open",
            **{DOC_PREFIX + key: text for key, text in docs.items()}}


def is_shelf(config: dict[str, Any]) -> bool:
    return SHELF_LABEL in (config.get("Spec", {}).get("Labels") or {})


def read_shelf(config: dict[str, Any]) -> Shelf:
    """The shelf in a config Docker gave; ValueError if it is malformed."""
    try:
        spec = config["Spec"]
        number = shelf_number(str(spec["Name"]))
        labels = spec.get("Labels") or {}
        version = int(config["Version"]["Index"])
        closed = labels[SHELF_LABEL] == "closed"
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a swarm-enroll shelf ({type(exc).__name__})") from None
    if number is None:
        raise ValueError("not a swarm-enroll shelf (its name)")
    docs = {k.removeprefix(DOC_PREFIX): str(v) for k, v in labels.items()
            if k.startswith(DOC_PREFIX)}
    return Shelf(number, str(config.get("ID", "")), version, closed, docs)
