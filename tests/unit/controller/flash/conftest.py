"""Boot partitions laid out like real ones, a stand-in wheel, and `enrollctl flash` to run."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller.enrollctl import main

PIN = "sha256:" + "ab" * 32
TOKEN = "seb_" + "T0k3n-_" * 6 + "x"  # 4 + 43 characters, as tokens create prints them
PASSPHRASE = "correct horse battery staple"
SSID = "Lab Wi-Fi"

# Raspberry Pi OS Bookworm Lite, as written by dd (before its first boot)
BOOKWORM_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 "
                    "rootfstype=ext4 fsck.repair=yes rootwait quiet "
                    "init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
CONFIG_TXT = "# For more options see http://rptl.io/configtxt\ndtparam=audio=on\n[all]\n"
# what Raspberry Pi Imager writes into user-data for a cloud-init image
IMAGER_USER_DATA = """#cloud-config
hostname: raspberrypi
manage_etc_hosts: true
packages:
- avahi-daemon
apt:
  conf: |
    Acquire {
      Check-Date "false";
    };
timezone: Europe/London
keyboard:
  model: pc105
  layout: "gb"
enable_ssh: true
users:
- name: admin
  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo
  shell: /bin/bash
  lock_passwd: false
  passwd: $5$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDE
ssh_pwauth: true
"""
DEFAULT_NETWORK_CONFIG = "# This file contains a netplan-compatible configuration\n#version: 2\n"


def _common(boot: Path) -> None:
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(CONFIG_TXT)
    (boot / "issue.txt").write_text("Raspberry Pi reference 2024-11-19\n")
    (boot / "start.elf").write_bytes(b"\x7fELF" + bytes(64))
    (boot / "bcm2708-rpi-zero-w.dtb").write_bytes(bytes(128))
    (boot / "overlays").mkdir()
    (boot / "overlays" / "README").write_text("overlays\n")


@pytest.fixture
def bookworm(tmp_path: Path) -> Path:
    """A boot partition without cloud-init: the first-run script path."""
    boot = tmp_path / "bootfs"
    _common(boot)
    (boot / "cmdline.txt").write_text(BOOKWORM_CMDLINE)
    return boot


@pytest.fixture
def cloud_card(tmp_path: Path) -> Path:
    """A cloud-init boot partition after Raspberry Pi Imager's customisation."""
    boot = tmp_path / "bootfs-ci"
    _common(boot)
    (boot / "cmdline.txt").write_text(BOOKWORM_CMDLINE.replace(
        "init=/usr/lib/raspberrypi-sys-mods/firstboot", "ds=nocloud;i=rpi-imager-1731000000"))
    (boot / "user-data").write_text(IMAGER_USER_DATA)
    (boot / "meta-data").write_text("instance-id: rpi-imager-1731000000\n")
    (boot / "network-config").write_text(DEFAULT_NETWORK_CONFIG)
    return boot


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A stand-in for the real wheel (the packaging tests build the real one)."""
    path = tmp_path / "dist" / "swarm_enroll-0.1.0-py3-none-any.whl"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("agent/__init__.py", '__version__ = "0.1.0"\n')
        zf.writestr("agent/cli.py", "")
    return path


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "token").write_text(TOKEN + "\n")
    (d / "psk").write_text(PASSPHRASE + "\n")
    return d


@pytest.fixture
def flash(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `enrollctl flash ARGS` in-process (no ENROLLCTL_* from the environment)."""
    for var in ("ENROLLCTL_URL", "ENROLLCTL_PIN", "ENROLLCTL_TOKEN", "ENROLLCTL_CA_FILE"):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str | Path, input: str | None = None) -> Result:
        argv = ["--config", "/dev/null", "flash", *map(str, args)]
        return CliRunner().invoke(main, argv, input=input, catch_exceptions=False)

    return run


def tree(path: Path) -> dict[str, tuple[str, int]]:
    """Every file and directory under path, with its content hash and mode."""
    out: dict[str, tuple[str, int]] = {}
    for p in sorted(path.rglob("*")):
        mode = stat.S_IMODE(p.lstat().st_mode)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[p.relative_to(path).as_posix()] = (digest, mode)
    return out


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.output, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]
