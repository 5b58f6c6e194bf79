"""Card Pis beyond the first journey (`make test-cards`): a manager card that waits for
approval, power lost during the install, and reboots that keep the Pi's identity.

The tests run in file order on one lab: the reboot test reboots the Pis the first two
brought up.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner

from controller.enrollctl import main as enrollctl
from deploy.lab import cards, mounts
from deploy.lab.demo import wait_for

from .conftest import CardLab, Flash, boot_records, firstboot_log

pytestmark = [pytest.mark.lab, pytest.mark.cards]

MANAGER, WORKER = "mgr-card1", "PiCard-W2"  # a manager by the rules' name


def test_manager_card_waits_is_approved_and_promoted(card_lab: CardLab, flash: Flash) -> None:
    card = flash(MANAGER, cloud_init=True, pin=card_lab.pin)  # no token: a manual rule
    assert (card / "user-data").read_text().startswith("#cloud-config")
    card_lab.lab.add_pi(MANAGER, card=card)

    pending = wait_for(f"{MANAGER} pending", lambda: [
        r for r in card_lab.records(MANAGER) if r["state"] == "pending"], 300)
    assert len(pending) == 1 and card_lab.node(MANAGER) is None  # not in the swarm yet
    status = card_lab.lab.status()
    approved = CliRunner().invoke(enrollctl, ["--config", "/dev/null", "nodes", "approve",
                                              MANAGER], env={
        "ENROLLCTL_URL": status["controller_url"], "ENROLLCTL_PIN": card_lab.pin,
        "ENROLLCTL_TOKEN": status["admin_token"]})
    assert approved.exit_code == 0, approved.output + approved.stderr

    card_lab.wait_ready(MANAGER, role="manager", timeout=120)  # promoted, reachable
    card_lab.wait_joined(MANAGER)
    assert len(card_lab.approvals(MANAGER)) == 1
    # cloud-init ran the first boot from the card: hostname, then the runcmd
    assert card_lab.os(MANAGER, "cloud-init", "status").splitlines()[0] == "status: done"
    assert card_lab.os(MANAGER, "hostname") == MANAGER
    assert f"prepare: {MANAGER}, agent, swarm-enroll" in firstboot_log(card)
    assert "(cloud-init)" in firstboot_log(card)
    assert not (card / "swarm-enroll" / "agent.toml").exists()
    assert card_lab.os(MANAGER, "systemctl", "is-active", "enroll-agent") == "active"


def test_power_lost_during_install_finishes_at_next_boot(card_lab: CardLab,
                                                        flash: Flash) -> None:
    created = card_lab.admin.create_token(900, 1, WORKER, "power cut")
    card = flash(WORKER, token=created["token"], pin=card_lab.pin)
    card_lab.lab.add_pi(WORKER, card=card)
    wait_for("the venv being created", lambda: "creating the venv" in firstboot_log(card),
             120, interval=0.05)
    card_lab.lab.reboot_pi(WORKER, hard=True)  # the plug pulled, and put back
    at_the_cut = firstboot_log(card)
    assert "installed swarm-enroll" not in at_the_cut  # pip was still at work

    card_lab.wait_ready(WORKER)
    log = firstboot_log(card)
    assert log.count(f"install: {WORKER}") == 2, log  # the unit ran again at the next boot
    assert log.count("installed swarm-enroll") == 1 and "done: enroll-agent" in log
    assert any("power cut" in line for line in boot_records(card_lab.lab, WORKER))
    assert [a["actor"] for a in card_lab.approvals(WORKER)] == [f"token:{created['id']}"]
    assert card_lab.os(WORKER, "systemctl", "is-active", "enroll-agent") == "active"


@pytest.mark.parametrize("name", [MANAGER, WORKER])
def test_reboot_keeps_identity_and_runs_no_first_boot(card_lab: CardLab, name: str) -> None:
    card = cards.read_card(card_lab.lab.node(name)["card"]).path
    before = card_lab.agent_id(name)
    log_before = firstboot_log(card)
    boots = cards.boot_count(card_lab.lab.card_pi(name))
    role = card_lab.node(name)["role"]

    started = time.monotonic()
    card_lab.lab.reboot_pi(name)  # systemctl reboot inside; the supervisor powers it up
    wait_for(f"{name}'s agent back", lambda: card_lab.lab.os_exec(
        name, ["systemctl", "is-active", "enroll-agent"],
        capture_output=True).stdout.strip() == "active", 120, interval=0.3)
    journal = wait_for(f"{name}'s agent answered", lambda: _agent_answer(card_lab, name,
                                                                         before), 120)
    print(f"{name}: reboot to the controller's answer in {time.monotonic() - started:.1f}s")

    assert cards.boot_count(card_lab.lab.card_pi(name)) == boots + 1
    # same key, hardware id and enrollment (which controllers serve may have changed: a
    # manager's own starts within a minute of its promotion)
    assert _identity(card_lab.agent_id(name)) == _identity(before)
    assert firstboot_log(card) == log_before  # the first boot did not run again
    assert "pending" not in journal  # no second approval was asked for
    assert [r["state"] for r in card_lab.records(name)] == ["joined"]
    assert len(card_lab.approvals(name)) == 1
    node = card_lab.wait_ready(name, role=role, timeout=60)
    assert node["role"] == role


def _identity(agent_id: dict[str, Any]) -> dict[str, Any]:
    """What `enroll-agent id` says of the Pi itself, without the controllers it knows now."""
    return {k: v for k, v in agent_id.items() if k != "controllers"}


def _agent_answer(card_lab: CardLab, name: str, before: dict[str, str]) -> str:
    """This boot's agent journal once it holds the controller's answer, else ''."""
    journal = card_lab.os(name, "journalctl", "--no-pager", "-b", "-u", "enroll-agent")
    return journal if f"enrollment {before['enrollment']}: joined" in journal else ""


def test_kill_powers_a_card_pi_off_hard(card_lab: CardLab) -> None:
    pi = card_lab.lab.card_pi(WORKER)
    card_lab.lab.kill_pi(WORKER)
    assert not cards.processes(pi)
    assert not mounts.mounts_under(pi.root)
    assert (pi.upper / "opt/swarm-enroll/bin/enroll-agent").exists()  # its disk stays
    node = card_lab.lab.node(WORKER)
    assert node["dead"] and not node["booted"]
