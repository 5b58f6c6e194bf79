"""Announcing through avahi's service files, browsing through avahi-browse (a stand-in
script here: the real daemon is the lab test's job, tests/deploy/test_avahi.py)."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent import avahi
from agent.avahi import AvahiMDNS, service_file_name, service_xml, write_atomically
from agent.wire.mdns import CONTROLLER_SERVICE, NODE_SERVICE

PIN = "sha256:" + "ab" * 32


def test_running_needs_a_listening_socket(tmp_path: Path) -> None:
    assert not avahi.running(tmp_path)
    (tmp_path / "socket").write_text("")  # a file, nobody listening
    assert not avahi.running(tmp_path)
    (tmp_path / "socket").unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "socket"))
    server.listen(1)
    try:
        assert avahi.running(tmp_path)
    finally:
        server.close()


def test_service_file_names() -> None:
    assert service_file_name(NODE_SERVICE) == "swarm-node.service"
    assert service_file_name(CONTROLLER_SERVICE) == "swarm-enroll.service"


def test_service_xml_is_avahis_format_and_escaped() -> None:
    txt = {"v": "1", "state": "pending", "hw": "<&>'\"", "ctl": "a\x01b"}
    root = ET.fromstring(service_xml("Pi <1> & \"x\"", NODE_SERVICE, 2377, txt))
    assert root.tag == "service-group"
    name = root.find("name")
    assert name is not None and name.text == 'Pi <1> & "x"'
    assert name.get("replace-wildcards") == "no"
    assert root.findtext("service/type") == "_swarm-node._tcp"
    assert root.findtext("service/port") == "2377"
    assert [e.text for e in root.findall("service/txt-record")] == [
        "v=1", "state=pending", "hw=<&>'\"", "ctl=ab"]


def test_write_atomically(tmp_path: Path) -> None:
    path = tmp_path / "x.service"
    old = os.umask(0o077)
    try:
        assert write_atomically(path, "one")
    finally:
        os.umask(old)
    assert path.read_text() == "one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # avahi reads it after dropping root
    assert not write_atomically(path, "one")  # unchanged: no rewrite, no reload
    assert write_atomically(path, "two") and path.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["x.service"]  # no temp file left


def _node_txt(state: str) -> dict[str, str]:
    return {"v": "1", "hw": "00000000a1b2c301", "id": "abc", "state": state, "role": "",
            "arch": "armv7l"}


def test_announce_writes_and_updates_the_file(tmp_path: Path) -> None:
    mdns = AvahiMDNS(tmp_path)
    mdns.announce(NODE_SERVICE, "PiLike-03", 2377, _node_txt("new"), [], "PiLike-03")
    path = tmp_path / "swarm-node.service"
    root = ET.parse(path).getroot()
    assert root.findtext("name") == "PiLike-03"
    assert "state=new" in [e.text for e in root.iter("txt-record")]
    mdns.announce(NODE_SERVICE, "PiLike-03", 2377, _node_txt("joined"), [], "PiLike-03")
    assert "state=joined" in [e.text for e in ET.parse(path).getroot().iter("txt-record")]
    mdns.close()
    assert path.exists()  # the agent's announcement outlives it: avahi keeps announcing


def test_controller_file_goes_on_close(tmp_path: Path) -> None:
    mdns = AvahiMDNS(tmp_path, keep_on_close=False)
    mdns.announce(CONTROLLER_SERVICE, "PiLike-01", 8443, {"v": "1", "ca": PIN}, [], "x")
    assert (tmp_path / "swarm-enroll.service").exists()
    mdns.close()
    assert not (tmp_path / "swarm-enroll.service").exists()


def test_announce_never_raises(tmp_path: Path) -> None:
    mdns = AvahiMDNS(tmp_path / "missing")
    mdns.announce(NODE_SERVICE, "PiLike-03", 2377, _node_txt("new"), [], "PiLike-03")
    mdns.close()


@pytest.fixture
def fake_browse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An avahi-browse on PATH that prints the file `output` (exit status in `status`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "avahi-browse"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/args\ncat {tmp_path}/output\n'
                      f'exit $(cat {tmp_path}/status)\n')
    script.chmod(0o755)
    (tmp_path / "output").write_text("")
    (tmp_path / "status").write_text("0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def _ctl(name: str, addr: str, pin: str = PIN) -> str:
    return (f"+;eth0;IPv4;{name};_swarm-enroll._tcp;local\n"
            f'=;eth0;IPv4;{name};_swarm-enroll._tcp;local;{name}.local;{addr};8443;'
            f'"v=1" "ca={pin}" "cluster=abc"\n')


class Events:
    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.cond = threading.Condition()

    def found(self, instance: str, txt: dict[str, str], addresses: list[str],
              port: int) -> None:
        with self.cond:
            self.items.append(("found", instance, txt.get("ca"), tuple(addresses), port))
            self.cond.notify_all()

    def gone(self, instance: str) -> None:
        with self.cond:
            self.items.append(("gone", instance))
            self.cond.notify_all()

    def wait(self, count: int) -> list[tuple]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout=10)
            return list(self.items)


def test_browse_reports_found_changed_and_gone(fake_browse: Path) -> None:
    (fake_browse / "output").write_text(_ctl("ctl\\0321", "198.18.0.11"))
    events = Events()
    mdns = AvahiMDNS(fake_browse, refresh=0.05)
    mdns.browse(CONTROLLER_SERVICE, events.found, events.gone)
    try:
        assert events.wait(1)[0] == ("found", "ctl 1", PIN, ("198.18.0.11",), 8443)
        (fake_browse / "status").write_text("1")  # avahi-browse failing: nothing gone
        (fake_browse / "output").write_text("")
        time.sleep(0.3)
        assert len(events.items) == 1
        # the new output first, then the status: a run between the two (a busy host) must
        # not read an empty output with a good status, which is the controller gone
        (fake_browse / "output").write_text(_ctl("ctl\\0321", "198.18.0.12"))
        (fake_browse / "status").write_text("0")
        assert events.wait(2)[1] == ("found", "ctl 1", PIN, ("198.18.0.12",), 8443)
        (fake_browse / "output").write_text("")
        assert events.wait(3)[2] == ("gone", "ctl 1")
    finally:
        mdns.close()
    args = (fake_browse / "args").read_text().splitlines()
    assert args[0] == "-rtpk _swarm-enroll._tcp"


def test_browse_survives_a_failing_callback(fake_browse: Path) -> None:
    (fake_browse / "output").write_text(_ctl("a", "198.18.0.11") + _ctl("b", "198.18.0.12"))
    events = Events()

    def found(instance: str, txt: dict[str, str], addresses: list[str], port: int) -> None:
        if instance == "a":
            raise ValueError("bad peer")
        events.found(instance, txt, addresses, port)

    mdns = AvahiMDNS(fake_browse, refresh=0.05)
    mdns.browse(CONTROLLER_SERVICE, found)
    try:
        assert events.wait(1)[0][1] == "b"
    finally:
        mdns.close()


def test_browse_without_avahi_browse_keeps_going(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    mdns = AvahiMDNS(tmp_path, refresh=0.05)
    mdns.browse(CONTROLLER_SERVICE, lambda *a: None)
    time.sleep(0.2)
    mdns.close()
    assert not any(t.is_alive() for t in mdns._threads)
