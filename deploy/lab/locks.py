"""A host-wide lock by file: the lab's shared things (a state dir, the card root's cache,
the host's /run/avahi-daemon) are changed by one lab operation at a time."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path, timeout: float | None = None,
           busy: Callable[[], Exception] = lambda: TimeoutError("lock held")) -> Iterator[None]:
    """Held until the block ends. Waits for whoever holds it: as long as it takes, or
    `timeout` seconds, then raises `busy()`."""
    with open(path, "w") as fh:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise busy() from None
                time.sleep(0.5)
        yield
