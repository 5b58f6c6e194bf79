"""A worker card with a bootstrap token: flashed, plugged in, and the Pi joins by itself.

The one card journey that `make test` runs (the others are in `make test-cards`). The Pi
boots a Raspberry Pi OS Bookworm-like card: the kernel-command-line hook runs the first
stage, the Pi reboots, the second stage installs offline from the card and starts the
agent under the shipped unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from controller.flash.bootfs import HOOK_ARGS
from deploy.lab import cards, mounts, rootfs
from deploy.lab.lab import Lab

from .conftest import REPO, CardLab, Flash, boot_records, firstboot_log

pytestmark = pytest.mark.lab


def test_worker_card_boots_and_joins_with_no_admin_step(card_lab: CardLab,
                                                         flash: Flash) -> None:
    created = card_lab.admin.create_token(900, 1, "PiCard-W*", "worker card")
    card = flash("PiCard-W1", token=created["token"], pin=card_lab.pin)
    assert HOOK_ARGS[0] in (card / "cmdline.txt").read_text()  # Bookworm: the kernel hook

    started = time.monotonic()
    card_lab.lab.add_pi("PiCard-W1", card=card)
    card_lab.wait_ready("PiCard-W1")
    print(f"PiCard-W1: card power-on to Ready in {time.monotonic() - started:.1f}s")

    # approved by its token, nobody else
    approvals = card_lab.approvals("PiCard-W1")
    assert [a["actor"] for a in approvals] == [f"token:{created['id']}"]
    record = card_lab.wait_joined("PiCard-W1")
    assert record["hardware_id"] == card_lab.lab.node("PiCard-W1")["hardware_id"]

    # the first boot as on a Pi: systemd ran the hook from cmdline.txt, which unhooked
    # itself, and the Pi rebooted into its normal boot
    boots = [b for b in boot_records(card_lab.lab, "PiCard-W1") if " boot: " in b]
    assert len(boots) == 2, boots
    assert all(a in boots[0] for a in HOOK_ARGS) and "console=" not in boots[0]
    assert "(no systemd.* arguments)" in boots[1]
    assert not any(a in (card / "cmdline.txt").read_text() for a in HOOK_ARGS)
    log = firstboot_log(card)
    for step in ("prepare: PiCard-W1, agent", "rebooting into the second stage",
                 "install: PiCard-W1", "Docker and python3-venv are installed already",
                 "installed swarm-enroll", "done: enroll-agent is running"):
        assert step in log, log

    # the card gave up its secrets; its log holds none
    assert not (card / "swarm-enroll" / "agent.toml").exists()
    for path in card.rglob("*"):
        if path.is_file():
            assert created["token"].encode() not in path.read_bytes(), path
    assert card_lab.os("PiCard-W1", "stat", "-c", "%a", "/etc/swarm-enroll/agent.toml") \
        == "600"

    # inside: its hostname from the card, the shipped unit running with its sandboxing
    assert card_lab.os("PiCard-W1", "hostname") == "PiCard-W1"
    assert card_lab.os("PiCard-W1", "systemctl", "is-active", "enroll-agent") == "active"
    assert card_lab.os("PiCard-W1", "cat", "/etc/systemd/system/enroll-agent.service") == \
        (REPO / "deploy/systemd/enroll-agent.service").read_text().strip()
    sandbox = card_lab.sandbox("PiCard-W1", "enroll-agent")
    assert sandbox["NoNewPrivs"] == "1"
    assert sandbox["CapEff"] == "0000000000000000"  # CapabilityBoundingSet= (none)
    assert sandbox["root"].split(",")[0] == "ro"  # ProtectSystem=strict
    # offline: no route out of the lab, so pip used the card's wheelhouse only
    assert "default" not in card_lab.os("PiCard-W1", "ip", "route")
    enabled = card_lab.lab.os_exec("PiCard-W1", ["systemctl", "is-enabled",
                                                 "swarm-enroll-firstboot"], capture_output=True)
    assert enabled.stdout.strip() == "disabled"  # the first boot is over


def test_down_leaves_no_card_pi_behind(card_lab: CardLab,
                                       lab_leftovers: Callable[[Lab], list[str]]) -> None:
    lab = card_lab.lab
    pi = lab.card_pi("PiCard-W1")
    assert cards.processes(pi) and mounts.mounts_under(pi.root)  # something to take down
    lab.down()
    assert lab_leftovers(lab) == []  # nspawn, booted system, overlay, cgroups: all gone
    root = rootfs.cached(lab.state_dir)  # the Debian root stays for the next boot
    assert root is not None and (root / "usr/lib/systemd/systemd").exists()
