"""The OS's own mDNS responder, avahi-daemon, where one runs.

Two responders on one host fight over port 5353 and answer each other's probes, which
avahi itself warns against; so where avahi runs, it announces and browses for us.
"""

from __future__ import annotations

import socket
from pathlib import Path

RUN_DIR = Path("/run/avahi-daemon")


def running(run_dir: Path = RUN_DIR) -> bool:
    """True when an avahi-daemon answers on its socket here (as nss-mdns checks it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(str(run_dir / "socket"))
    except OSError:
        return False
    finally:
        sock.close()
    return True
