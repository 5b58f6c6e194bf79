"""A host-wide lock by file: the lab's shared things (the card root's cache, the host's
/run/avahi-daemon) are changed by one lab at a time."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held until the block ends (waiting for whoever holds it)."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
