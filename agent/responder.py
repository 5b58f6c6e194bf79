"""Which mDNS responder announces and browses for us: the OS's avahi-daemon where it
runs, else python-zeroconf of our own (imported only then: it costs memory)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from agent import avahi

log = logging.getLogger(__name__)

MDNS_VIA = ("auto", "avahi", "zeroconf")


class Responder(Protocol):
    def announce(self, service: str, instance: str, port: int, txt: dict[str, str],
                 addresses: list[str], server: str) -> None: ...

    def browse(self, service: str, found: avahi.Found, gone: avahi.Gone | None = None
               ) -> None: ...

    def close(self) -> None: ...


def uses_avahi(via: str, run_dir: Path) -> bool:
    """`auto`: avahi if its daemon answers on `run_dir`/socket; else as `via` says."""
    return via == "avahi" or (via == "auto" and avahi.running(run_dir))


def open_responder(via: str, interfaces: list[str], services_dir: Path, run_dir: Path,
                   keep_on_close: bool, refresh: float = 5.0) -> Responder:
    """The responder `via` asks for (see MDNS_VIA); zeroconf binds to `interfaces`."""
    if uses_avahi(via, run_dir):
        if not avahi.running(run_dir):
            log.warning("mdns_via = \"avahi\" but no avahi-daemon answers on %s/socket: "
                        "announcing through %s all the same", run_dir, services_dir)
        log.info("mDNS through avahi-daemon (service files in %s)", services_dir)
        return avahi.AvahiMDNS(services_dir, keep_on_close, refresh)
    from agent.mdns import MDNS
    return MDNS(interfaces)
