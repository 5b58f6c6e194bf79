"""Memory given back after a burst: a controller idles almost always, but a fleet powering
up makes it serve hundreds of requests at once, and glibc keeps what they freed.

Two glibc knobs, where glibc is the C library (elsewhere nothing happens): at most
ARENAS malloc arenas (each thread that allocates would otherwise get its own, 8 per core,
and memory freed in one cannot serve another), and malloc_trim() to hand freed pages back
to the kernel once the process has been busy (more than BUSY seconds of CPU in the last
CHECK_EVERY seconds): during and right after a burst, never while idle. Before each trim,
a full garbage collection: objects in reference cycles wait for it, and after a burst
nothing allocates enough to trigger one. The bench's "controller RSS idle after a storm"
is what these are for (README: Performance).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt() parameter number
ARENAS = 2
CHECK_EVERY = 5.0  # seconds
BUSY = 0.05  # seconds of CPU in one check's window (idle, a controller uses ~5 ms)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(libc: Any = None) -> bool:
    """Before the threads start: those already running keep their arenas."""
    libc = libc or _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, ARENAS) == 1)


def trim(libc: Any = None) -> bool:
    """True when glibc gave memory back to the kernel."""
    libc = libc or _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)


def start_trimming(stop: threading.Event) -> None:
    """Trim after busy windows until `stop` (a few milliseconds each)."""
    libc = _libc()
    if libc is None:
        log.debug("no glibc: memory is not trimmed")
        return

    def run() -> None:
        busy, last = False, time.process_time()
        while not stop.wait(CHECK_EVERY):
            now = time.process_time()
            was_busy, busy, last = busy, now - last > BUSY, now
            if busy or was_busy:  # the window after the last busy one: the burst's end
                gc.collect()  # what the burst left in reference cycles, before the trim
                trim(libc)

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()
