"""Pis heard over mDNS, in memory: bounded and expiring, since anyone on the LAN can
announce whatever it likes, as often as it likes.

Each controller keeps its own (it hears the LAN itself); nothing here is shared state.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_SIGHTINGS = 512
FORGET_AFTER = 3600.0  # seconds without an announcement


@dataclass
class Sighting:
    hostname: str
    agent_id: str
    hardware_id: str
    state: str
    role: str
    arch: str
    addresses: list[str] = field(default_factory=list)
    first_seen: float = 0.0
    last_seen: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Sightings:
    def __init__(self, capacity: int = MAX_SIGHTINGS, ttl: float = FORGET_AFTER) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._seen: OrderedDict[tuple[str, str], Sighting] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, hostname: str, agent_id: str, hardware_id: str, state: str, role: str,
               arch: str, addresses: list[str]) -> None:
        now = time.time()
        key = (hostname.lower(), agent_id)
        with self._lock:
            old = self._seen.pop(key, None)
            self._seen[key] = Sighting(hostname, agent_id, hardware_id, state, role, arch,
                                       list(addresses), old.first_seen if old else now, now)
            self._expire(now)
            while len(self._seen) > self.capacity:  # the least recently heard goes first
                self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if now - oldest.last_seen <= self.ttl:
                break
            self._seen.popitem(last=False)

    def list(self) -> list[Sighting]:
        with self._lock:
            self._expire(time.time())
            return sorted(self._seen.values(), key=lambda s: (s.hostname.lower(), s.agent_id))
