"""Finding controllers: over mDNS (only those holding our CA) or from the config."""

from __future__ import annotations

import logging
import threading

from agent.wire.errors import WireError
from agent.wire.mdns import ControllerAd

log = logging.getLogger(__name__)


MAX_ADS = 32  # announcements kept; anyone on the LAN can announce, and with our (public) pin


class ControllerFinder:
    """Keeps the controllers to try, in order: those an answer over our pinned TLS named
    (every manager runs one), then those announced over mDNS with our pin.

    An announcement is anyone's, so the controllers we know from a pinned answer come
    first, and a failure of any kind moves on to the next (`rotate()`): a silent address
    announced with our pin cannot hold an agent. `pin=None` means trust on first use: every
    controller is a candidate. `static_url` (networks without multicast) replaces mDNS
    and comes first.
    """

    def __init__(self, pin: str | None, static_url: str = "",
                 known: list[str] | None = None) -> None:
        self.pin = pin
        self.static_url = static_url
        self._ads: dict[str, ControllerAd] = {}
        self._order: list[str] = []
        self._ignored: set[str] = set()
        self._known: list[str] = list(known or [])
        self._offset = 0
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
                if len(self._ignored) >= MAX_ADS:  # only there to log each one once
                    self._ignored.clear()
                self._ignored.add(instance)
                log.warning("ignoring controller %r: it holds CA %s, not our pin %s",
                            instance, ad.pin[:19] + "…", self.pin[:19] + "…")
            return
        with self._lock:
            if instance not in self._ads:
                if len(self._order) >= MAX_ADS:  # the oldest goes: a real one announces again
                    del self._ads[self._order.pop(0)]
                self._order.append(instance)
                log.info("found controller %r at %s", instance, ", ".join(ad.urls()))
            self._ads[instance] = ad
        self.changed.set()

    def gone(self, instance: str) -> None:
        with self._lock:
            self._ads.pop(instance, None)
            if instance in self._order:
                self._order.remove(instance)

    def learn(self, urls: list[str]) -> bool:
        """The controllers a grant (signed by our CA) names; True if that is news."""
        with self._lock:
            if urls == self._known:
                return False
            self._known = list(urls)
        if urls:
            self.changed.set()
        return True

    @property
    def known(self) -> list[str]:
        with self._lock:
            return list(self._known)

    def urls(self) -> list[str]:
        with self._lock:
            announced = [] if self.static_url else [
                url for name in self._order for url in self._ads[name].urls()]
            first = [self.static_url] if self.static_url else []
            ordered = list(dict.fromkeys([*first, *self._known, *announced]))
            if not ordered:
                return []
            start = self._offset % len(ordered)
            return ordered[start:] + ordered[:start]

    def rotate(self) -> None:
        """The first one failed: the next one first from now on."""
        with self._lock:
            self._offset += 1
