"""Choosing the responder: avahi where it runs (and then zeroconf is never imported)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.avahi import AvahiMDNS
from agent.responder import open_responder, uses_avahi

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def avahi_dir(tmp_path: Path) -> Iterator[Path]:
    """A run dir where something listens on `socket`, as avahi-daemon does."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "socket"))
    server.listen(1)
    yield tmp_path
    server.close()


def test_auto_follows_the_daemon(avahi_dir: Path, tmp_path: Path) -> None:
    assert uses_avahi("auto", avahi_dir)
    assert not uses_avahi("auto", tmp_path / "none")
    assert uses_avahi("avahi", tmp_path / "none")
    assert not uses_avahi("zeroconf", avahi_dir)


def test_avahi_responder_writes_where_configured(avahi_dir: Path, tmp_path: Path) -> None:
    mdns = open_responder("auto", [], tmp_path, avahi_dir, keep_on_close=True)
    assert isinstance(mdns, AvahiMDNS) and mdns.services_dir == tmp_path
    mdns.close()


def test_avahi_path_never_imports_zeroconf(avahi_dir: Path, tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; import agent.cli, agent.enroll; "
            "from agent.responder import open_responder; "
            f"m = open_responder('auto', [], Path({str(tmp_path)!r}), "
            f"Path({str(avahi_dir)!r}), True); m.close(); "
            "print(type(m).__name__, 'zeroconf' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == ["AvahiMDNS", "False"], result.stderr


def test_zeroconf_where_avahi_does_not_run(tmp_path: Path) -> None:
    # forced zeroconf on loopback only: the lab tests do the LAN
    mdns = open_responder("zeroconf", ["127.0.0.1"], tmp_path, tmp_path, keep_on_close=True)
    try:
        assert type(mdns).__name__ == "MDNS"
    finally:
        mdns.close()
