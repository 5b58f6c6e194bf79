"""The controller's discovery alone (controller/discovery.py, unchanged), for the avahi lab
test: announces `_swarm-enroll._tcp` and records the Pis it hears, through whichever
responder controller.toml's mdns_via picks; prints its sightings as JSON lines.

`discovery_only.py <state dir> <pin>` (controller.toml in the state dir); SIGTERM stops it
the way `enroll-controller serve` stops discovery.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from controller.config import load_config
from controller.discovery import ControllerDiscovery
from controller.sightings import Sightings


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    sightings = Sightings()
    discovery = ControllerDiscovery(config, sys.argv[2], "abcdefabcdef0123", sightings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    discovery.start()
    print(json.dumps({"responder": type(discovery.mdns).__name__}), flush=True)
    while not stop.wait(1.0):
        print(json.dumps({"sightings": [{"hostname": s.hostname, "state": s.state}
                                        for s in sightings.list()]}), flush=True)
    discovery.stop()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    main()
