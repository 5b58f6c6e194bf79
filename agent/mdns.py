"""Announce and browse DNS-SD services with python-zeroconf, on chosen interfaces only.

Shared by agent and controller. Zeroconf is bound to the given addresses (the
Pi's LAN address) so that docker0 and other local bridges are never announced
or listened on; given none (a flashed Pi's agent.toml has no advertise_addr), it
listens on every interface, as zeroconf does by default.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from agent.wire.mdns import decode_txt, instance_name

log = logging.getLogger(__name__)

Found = Callable[[str, dict[str, str], list[str], int], None]
Gone = Callable[[str], None]


class MDNS:
    """One zeroconf instance: announce one service, browse any number of types."""

    def __init__(self, interfaces: list[str]) -> None:
        self.zc = Zeroconf(interfaces=interfaces or InterfaceChoice.All,
                           ip_version=IPVersion.V4Only)
        self.interfaces = interfaces
        self._info: ServiceInfo | None = None
        self._browsers: list[ServiceBrowser] = []
        self._lock = threading.Lock()
        # zeroconf's register_service (probing, then announcing) and update_service block
        # for a second or more; a thread of our own does them, so that nobody waits.
        self._wanted: tuple[str, str, int, dict[str, str], list[str], str] | None = None
        self._wake = threading.Condition()
        self._closing = False
        self._announcer = threading.Thread(target=self._announce_loop, name="mdns-announce",
                                           daemon=True)
        self._announcer.start()

    def announce(self, service: str, instance: str, port: int, txt: dict[str, str],
                 addresses: list[str], server: str) -> None:
        """Register, or update the TXT of, this instance's one announced service; returns
        at once (the announcer thread does it, the newest wish first).

        Never raises: mDNS is how the admin sees a Pi, not how it enrolls, so a name
        clash (another host announcing the same hostname) is logged, not fatal.
        """
        with self._wake:
            self._wanted = (service, instance, port, dict(txt), list(addresses), server)
            self._wake.notify()

    def _announce_loop(self) -> None:
        while True:
            with self._wake:
                while self._wanted is None and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                wanted, self._wanted = self._wanted, None
            self._announce_now(*wanted)

    def _announce_now(self, service: str, instance: str, port: int, txt: dict[str, str],
                      addresses: list[str], server: str) -> None:
        with self._lock:
            name = self._info.name if self._info else instance_name(instance, service)
            info = ServiceInfo(
                service, name, port=port, properties=txt,
                addresses=[ipaddress.ip_address(a).packed for a in addresses],
                server=f"{server}.local.",
            )
            try:
                if self._info is None:
                    self.zc.register_service(info, allow_name_change=True)
                    if info.name != instance_name(instance, service):
                        log.warning("another host on the LAN announces %r; announcing as %r",
                                    instance, info.name)
                elif self._info.properties != info.properties:
                    self.zc.update_service(info)
            except Exception as exc:  # zeroconf's errors vary by version
                log.warning("mDNS announcement failed: %s", type(exc).__name__)
                return
            self._info = info

    def browse(self, service: str, found: Found, gone: Gone | None = None) -> None:
        """Call `found(instance, txt, addresses, port)` for each instance seen or changed."""

        def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                      state_change: ServiceStateChange) -> None:
            instance = name.removesuffix("." + service_type)
            if state_change is ServiceStateChange.Removed:
                if gone:
                    gone(instance)
                return
            info = zeroconf.get_service_info(service_type, name, timeout=2000)
            if info is None or info.port is None:
                return
            try:
                found(instance, decode_txt(info.properties), info.parsed_addresses(), info.port)
            except Exception:  # one bad peer must never stop the browser thread
                log.exception("ignoring mDNS record %r", name)

        self._browsers.append(ServiceBrowser(self.zc, service, handlers=[on_change]))

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._announcer.join(timeout=5)
        for browser in self._browsers:
            browser.cancel()
        with self._lock:
            if self._info is not None:
                self.zc.unregister_service(self._info)
                self._info = None
        self.zc.close()
