"""Single-use, short-lived nonces: each signed agent request spends one.

Kept in memory: after a restart agents simply get a `bad_nonce` answer and
fetch a fresh one, as ACME clients do.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict


class NonceStore:
    def __init__(self, ttl: float = 120.0, capacity: int = 100_000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            while len(self._issued) >= self.capacity:
                self._issued.popitem(last=False)
            self._issued[nonce] = now + self.ttl
        return nonce

    def spend(self, nonce: str) -> bool:
        """True once for a nonce we issued that has not expired; False ever after."""
        with self._lock:
            deadline = self._issued.pop(nonce, None)
        return deadline is not None and deadline > time.monotonic()

    def _expire(self, now: float) -> None:
        while self._issued:
            nonce, deadline = next(iter(self._issued.items()))
            if deadline > now:
                break
            del self._issued[nonce]
