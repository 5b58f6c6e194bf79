"""Who this Pi is: its hardware id and facts about the board."""

from __future__ import annotations

import platform
import re
from pathlib import Path

_SERIAL_FILE = Path("/sys/firmware/devicetree/base/serial-number")
_CPUINFO = Path("/proc/cpuinfo")
_MACHINE_ID = Path("/etc/machine-id")
_MODEL_FILE = Path("/sys/firmware/devicetree/base/model")


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"").decode("ascii", "replace").strip()
    except OSError:
        return ""


def hardware_id(override: str = "") -> str:
    """Board serial, else the cpuinfo Serial, else machine-id: stable across re-flashes
    except the last, which a re-flash renews."""
    if override:
        return override
    serial = _read(_SERIAL_FILE)
    if serial:
        return serial
    match = re.search(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", _read(_CPUINFO), re.MULTILINE)
    if match:
        return match.group(1)
    return _read(_MACHINE_ID)


def board_model(override: str = "") -> str:
    return override or _read(_MODEL_FILE)[:128] or "unknown"


def architecture(override: str = "") -> str:
    return override or platform.machine()
