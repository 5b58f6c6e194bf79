"""Lab Pis that boot the cards `enrollctl flash` wrote: the shared set-up.

Real everything: the cached Debian 12 root under systemd-nspawn as the Pi's OS, the card
bound at /boot/firmware, the first boot installing from the card's wheel and wheelhouse
with no network beyond the lab, the shipped units with their sandboxing; the lab's dockerd
per Pi, mDNS between the lab's namespaces, pinned HTTPS to the controller.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controller.adminclient import AdminClient
from controller.enrollctl import main as enrollctl
from controller.flash.wheel import build_wheel
from controller.rules import DEFAULT_RULES
from deploy.lab.config import load_cluster
from deploy.lab.demo import admin_client, swarm_nodes, wait_for
from deploy.lab.dockerd import log_tail
from deploy.lab.lab import Lab, LabError

REPO = Path(__file__).resolve().parents[2]
FIRST_BOOT = 300.0  # seconds: a first boot (venv and pip from the wheelhouse) to Ready
RULES = DEFAULT_RULES  # managers mgr-*, manual; everyone else by token
# Raspberry Pi OS Lite as written by dd: Bookworm (no cloud-init: the cmdline.txt hook)
BOOKWORM_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 "
                    "rootfstype=ext4 fsck.repair=yes rootwait quiet "
                    "init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
# ... and an image with cloud-init after Raspberry Pi Imager set a user (no packages:
# a lab Pi has no route to a package mirror)
CLOUD_USER_DATA = """#cloud-config
hostname: raspberrypi
manage_etc_hosts: true
users:
- name: admin
  groups: users,adm,sudo
  shell: /bin/bash
  lock_passwd: true
"""


@dataclass(frozen=True)
class Software:
    wheel: Path
    wheelhouse: Path


@pytest.fixture(scope="session")
def software(tmp_path_factory: pytest.TempPathFactory) -> Software:
    """The wheel of this tree and a wheelhouse of its dependencies (with the controller
    extra) for this host's architecture, as `make dist` and `make wheelhouse` make them."""
    out = tmp_path_factory.mktemp("software")
    wheel = build_wheel(out / "dist")
    wheelhouse = out / "wheelhouse"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                          str(wheelhouse), f"{wheel}[controller]"], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheelhouse / wheel.name).unlink()
    return Software(wheel, wheelhouse)


def blank_card(path: Path, cloud_init: bool) -> Path:
    """A boot partition as dd leaves it: Bookworm's, or an image with cloud-init."""
    path.mkdir(parents=True)
    (path / "config.txt").write_text("dtparam=audio=on\n[all]\n")
    (path / "start.elf").write_bytes(b"\x7fELF" + bytes(64))
    if cloud_init:
        (path / "cmdline.txt").write_text(BOOKWORM_CMDLINE.replace(
            " init=/usr/lib/raspberrypi-sys-mods/firstboot", ""))
        (path / "user-data").write_text(CLOUD_USER_DATA)
    else:
        (path / "cmdline.txt").write_text(BOOKWORM_CMDLINE)
    return path


def write_card(path: Path, hostname: str, software: Software, *args: str,
               cloud_init: bool = False, token: str | None = None,
               pin: str | None = None) -> Path:
    """A blank card at `path`, flashed with `enrollctl flash` (wheel and wheelhouse)."""
    card = blank_card(path, cloud_init)
    more = list(args)
    if token:
        (path.parent / f"{path.name}.token").write_text(token + "\n")
        more += ["--token-file", str(path.parent / f"{path.name}.token")]
    if pin:
        more += ["--pin", pin]
    result = CliRunner().invoke(enrollctl, [
        "--config", "/dev/null", "flash", str(card), "--hostname", hostname,
        "--wheel", str(software.wheel), "--wheelhouse", str(software.wheelhouse), *more])
    assert result.exit_code == 0, result.output + result.stderr
    return card


Flash = Callable[..., Path]


@pytest.fixture
def flash(software: Software, tmp_path: Path) -> Flash:
    """flash(hostname, *more args, cloud_init=False, token=None, pin=None) -> the card."""
    def run(hostname: str, *args: str, **kwargs: Any) -> Path:
        return write_card(tmp_path / f"card-{hostname}", hostname, software, *args, **kwargs)
    return run


@dataclass
class CardLab:
    lab: Lab
    admin: AdminClient
    pin: str
    manager: str  # where `docker node ls` is asked

    def os(self, name: str, *argv: str) -> str:
        """stdout of argv run inside the Pi's booted system (it must succeed)."""
        res = self.lab.os_exec(name, argv, capture_output=True, timeout=60)
        assert res.returncode == 0, f"{argv}: {res.returncode} {res.stdout} {res.stderr}"
        return res.stdout.strip()

    def node(self, hostname: str) -> dict[str, Any] | None:
        return next((n for n in swarm_nodes(self.lab, self.manager)
                     if n["hostname"] == hostname), None)

    def wait_ready(self, hostname: str, role: str = "worker",
                   timeout: float = FIRST_BOOT) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            node = self.node(hostname)
            wanted = ("ready", role, "reachable" if role == "manager" else "")
            return node if node and (node["state"], node["role"], node["reachability"]) \
                == wanted else None
        try:
            return wait_for(f"{hostname} Ready as a {role} (a manager: reachable)", check,
                            timeout)
        except LabError as exc:
            raise AssertionError(f"{exc}\n{self.journal(hostname)}") from None

    def journal(self, name: str) -> str:
        """The first boot's and the agent's journal, and the console (for failures)."""
        res = self.lab.os_exec(name, ["journalctl", "--no-pager", "-n", "60",
                                      "-u", "swarm-enroll-firstboot", "-u", "enroll-agent",
                                      "-u", "enroll-controller"], capture_output=True,
                               timeout=60) if self.lab.node(name)["booted"] else None
        console = self.lab.card_pi(name).console
        return (f"--- journal:\n{res.stdout if res else '(not running)'}\n"
                f"--- {console}:\n{log_tail(console, 30)}")

    def records(self, hostname: str) -> list[dict[str, Any]]:
        return [n for n in self.admin.nodes() if n["hostname"] == hostname]

    def wait_joined(self, hostname: str, timeout: float = 60) -> dict[str, Any]:
        """The controller's one record of the Pi, once it says joined (the agent reports
        its join after the node is Ready)."""
        def check() -> dict[str, Any] | None:
            records = self.records(hostname)
            return records[0] if [r["state"] for r in records] == ["joined"] else None
        return wait_for(f"{hostname}'s one record joined", check, timeout, interval=0.5)

    def approvals(self, hostname: str) -> list[dict[str, Any]]:
        return [e for e in self.admin.audit(hostname=hostname)
                if e["action"] == "node.approve"]

    def agent_id(self, name: str) -> dict[str, Any]:
        return json.loads(self.os(name, "/opt/swarm-enroll/bin/enroll-agent", "id"))

    def sandbox(self, name: str, unit: str) -> dict[str, str]:
        """What the kernel says about the unit's main process: its credentials and root."""
        pid = self.os(name, "systemctl", "show", "--property=MainPID", "--value", unit)
        status = dict(line.split(":\t", 1) for line in
                      self.os(name, "cat", f"/proc/{pid}/status").splitlines()
                      if ":\t" in line)
        root = next(line.split() for line in
                    self.os(name, "cat", f"/proc/{pid}/mountinfo").splitlines()
                    if line.split()[4] == "/")
        return {"NoNewPrivs": status["NoNewPrivs"].strip(), "CapEff": status["CapEff"].strip(),
                "root": root[5]}


def firstboot_log(card: Path) -> str:
    """What the first boot wrote onto the card so far ('' before it started)."""
    path = card / "swarm-enroll" / "firstboot.log"
    return path.read_text() if path.exists() else ""


def cluster_file(d: Path, body: str) -> Path:
    (d / "rules.toml").write_text(RULES)
    (d / "cluster.toml").write_text('[lab]\nsubnet = "198.18.0.0/24"\n' + body)
    return d / "cluster.toml"


@pytest.fixture(scope="module")
def card_lab(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardLab]:
    """A lab with the lab's controller on PiLike-01, for card Pis to join."""
    lab = Lab()
    request.addfinalizer(lab.down)
    path = cluster_file(tmp_path_factory.mktemp("cluster"), """\
rules = "rules.toml"
controller = "PiLike-01"

[[pi]]
name = "PiLike-01"
model = "Raspberry Pi Zero W Rev 1.1"
arch = "armv6l"
hardware_id = "00000000a1b2c301"
""")
    started = time.monotonic()
    lab.rootfs()
    print(f"Debian root ready in {time.monotonic() - started:.1f}s")
    lab.up(load_cluster(path))
    yield CardLab(lab, admin_client(lab), lab.status()["pin"], "PiLike-01")


def boot_records(lab: Lab, name: str) -> list[str]:
    return lab.card_pi(name).boots.read_text().splitlines()
