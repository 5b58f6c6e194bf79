"""The controller on the LAN: announces itself, and notes every Pi it hears of."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.responder import Responder, open_responder
from agent.wire.errors import WireError
from agent.wire.mdns import CONTROLLER_SERVICE, NODE_SERVICE, ControllerAd, NodeAd
from controller.config import ControllerConfig
from controller.sightings import Sightings

log = logging.getLogger(__name__)


class ControllerDiscovery:
    def __init__(self, config: ControllerConfig, pin: str, cluster_id: str,
                 sightings: Sightings) -> None:
        self.config = config
        self.ad = ControllerAd(pin, cluster_id, (config.advertise_addr,), config.port)
        self.sightings = sightings
        self.mdns: Responder | None = None

    def start(self) -> None:
        interfaces = self.config.mdns_interfaces or [self.config.advertise_addr]
        # its service file goes when it stops: agents must not be sent to a stopped one
        self.mdns = open_responder(self.config.mdns_via, interfaces,
                                   Path(self.config.avahi_services_dir),
                                   Path(self.config.avahi_run_dir), keep_on_close=False,
                                   refresh=15.0)
        self.mdns.announce(CONTROLLER_SERVICE, self.config.hostname, self.config.port,
                           self.ad.txt(), [self.config.advertise_addr], self.config.hostname)
        self.mdns.browse(NODE_SERVICE, self._node_seen)
        log.info("announcing %s on %s", CONTROLLER_SERVICE, ", ".join(interfaces))

    def _node_seen(self, instance: str, txt: dict[str, str], addresses: list[str],
                   port: int) -> None:
        try:
            ad = NodeAd.parse(instance, txt)
        except WireError as exc:
            log.debug("ignoring node announcement %r: %s", instance[:64], exc.message)
            return
        self.sightings.record(ad.hostname, ad.agent_id, ad.hardware_id, ad.state, ad.role,
                              ad.arch, addresses[:8])

    def stop(self) -> None:
        if self.mdns is not None:
            self.mdns.close()
            self.mdns = None
