"""Finding controllers: over mDNS (only those holding our CA) or from the config."""

from __future__ import annotations

import logging
import threading

from agent.wire.errors import WireError
from agent.wire.mdns import ControllerAd

log = logging.getLogger(__name__)


class ControllerFinder:
    """Keeps the controllers announced with our pin, in the order to try them.

    With several (two managers), `rotate()` after a failure moves to the next.
    `pin=None` means trust on first use: every controller is a candidate.
    """

    def __init__(self, pin: str | None, static_url: str = "") -> None:
        self.pin = pin
        self.static_url = static_url
        self._ads: dict[str, ControllerAd] = {}
        self._order: list[str] = []
        self._ignored: set[str] = set()
        self._lock = threading.Lock()
        self.changed = threading.Event()

    def found(self, instance: str, txt: dict[str, str], addresses: list[str], port: int) -> None:
        try:
            ad = ControllerAd.parse(txt, addresses, port)
        except WireError as exc:
            log.info("ignoring controller %r: %s", instance[:64], exc.message)
            return
        if self.pin is not None and ad.pin != self.pin:
            if instance not in self._ignored:
                self._ignored.add(instance)
                log.warning("ignoring controller %r: it holds CA %s, not our pin %s",
                            instance, ad.pin[:19] + "…", self.pin[:19] + "…")
            return
        with self._lock:
            if instance not in self._ads:
                self._order.append(instance)
                log.info("found controller %r at %s", instance, ", ".join(ad.urls()))
            self._ads[instance] = ad
        self.changed.set()

    def gone(self, instance: str) -> None:
        with self._lock:
            self._ads.pop(instance, None)
            if instance in self._order:
                self._order.remove(instance)

    def urls(self) -> list[str]:
        if self.static_url:
            return [self.static_url]
        with self._lock:
            return [url for name in self._order for url in self._ads[name].urls()]

    def rotate(self) -> None:
        with self._lock:
            if len(self._order) > 1:
                self._order.append(self._order.pop(0))
