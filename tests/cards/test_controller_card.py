"""A controller card (`--controller-state`) boots the first manager, and two worker cards
then join through it (`make test-cards`). No lab controller: the cluster file's only Pi
boots the controller card, as on a real first power-on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.wire.errors import WireError
from controller.adminclient import AdminClient
from controller.cli import main as controller_main
from controller.enrollctl import main as enrollctl
from deploy.lab import cards, rootfs
from deploy.lab.config import load_cluster
from deploy.lab.demo import wait_for
from deploy.lab.lab import Lab

from .conftest import REPO, RULES, CardLab, Flash, Software, cluster_file, write_card

pytestmark = [pytest.mark.lab, pytest.mark.cards]

CONTROLLER, ADDRESS = "PiCard-C1", "198.18.0.11"


@dataclass
class Controller:
    card_lab: CardLab
    card: Path
    state: Path
    url: str
    admin_token: str


@pytest.fixture(scope="module")
def controller(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               software: Software) -> Iterator[Controller]:
    d = tmp_path_factory.mktemp("controller-card")
    (d / "rules.toml").write_text(RULES)
    init = CliRunner().invoke(controller_main, [
        "init", "--no-swarm-init", "--state-dir", str(d / "state"), "--advertise-addr",
        ADDRESS, "--hostname", CONTROLLER, "--rules", str(d / "rules.toml"),
        "--baseline", str(REPO / "deploy/lab/baseline.yml"), "--json"])
    assert init.exit_code == 0, init.output + init.stderr
    info = json.loads(init.stdout)
    card = write_card(d / "card", CONTROLLER, software, "--controller-state", str(d / "state"))

    lab = Lab()
    request.addfinalizer(lab.down)
    lab.up(load_cluster(cluster_file(d, f"""
[[pi]]
name = "{CONTROLLER}"
card = "{card}"
ip = "{ADDRESS}"
""")))
    admin = AdminClient(info["url"], info["admin_token"], ca_file=d / "state" / "ca.pem")
    wait_for(f"the controller at {info['url']}", lambda: _healthy(admin), 300)
    yield Controller(CardLab(lab, admin, info["pin"], CONTROLLER), card, d / "state",
                     info["url"], info["admin_token"])


def _healthy(admin: AdminClient) -> bool:
    try:
        return bool(admin.health())
    except (WireError, OSError):
        return False


def test_controller_card_boots_the_first_manager(controller: Controller) -> None:
    cl = controller.card_lab
    cl.wait_ready(CONTROLLER, role="manager", timeout=120)
    assert cl.os(CONTROLLER, "systemctl", "is-active", "enroll-controller") == "active"
    assert cl.os(CONTROLLER, "systemctl", "is-active", "enroll-agent") == "active"
    # its own agent is recognised as the controller's Pi, with no approval
    cl.wait_joined(CONTROLLER, timeout=120)
    # the CA key went off the card into the Pi's root-only state dir
    assert not (controller.card / "swarm-enroll" / "controller").exists()
    ca_key = (controller.state / "ca-key.pem").read_bytes()
    assert not any(ca_key in p.read_bytes() for p in controller.card.rglob("*") if p.is_file())
    assert cl.os(CONTROLLER, "stat", "-c", "%a", "/var/lib/swarm-enroll/ca-key.pem") == "600"
    # under the shipped unit's sandbox: only CAP_NET_BIND_SERVICE (bit 10)
    sandbox = cl.sandbox(CONTROLLER, "enroll-controller")
    assert (sandbox["CapEff"], sandbox["NoNewPrivs"]) == ("0000000000000400", "1")
    assert sandbox["root"].split(",")[0] == "ro"


def test_two_worker_cards_join_through_it(controller: Controller, flash: Flash) -> None:
    cl = controller.card_lab
    env = {"ENROLLCTL_URL": controller.url, "ENROLLCTL_PIN": cl.pin,
           "ENROLLCTL_TOKEN": controller.admin_token}
    created = CliRunner().invoke(enrollctl, [
        "--config", "/dev/null", "tokens", "create", "--ttl", "15m", "--uses", "2",
        "--hostname-glob", "PiCard-W*"], env=env)
    assert created.exit_code == 0, created.output + created.stderr
    token = created.stdout.strip()

    workers = {"PiCard-W3": False, "PiCard-W4": True}  # firstrun, cloud-init
    for name, cloud_init in workers.items():
        card = flash(name, cloud_init=cloud_init, token=token, pin=cl.pin)
        cl.lab.add_pi(name, card=card)
    for name in workers:
        cl.wait_ready(name)
        cl.wait_joined(name)
        [approval] = cl.approvals(name)
        assert approval["actor"].startswith("token:")
        assert cl.os(name, "systemctl", "is-active", "enroll-agent") == "active"
    managers = [n for n in _nodes(cl) if n["role"] == "manager"]
    assert [n["hostname"] for n in managers] == [CONTROLLER]


def test_down_after_losing_the_lab_state_leaves_nothing(
        controller: Controller, lab_leftovers: Callable[[Lab], list[str]]) -> None:
    lab = controller.card_lab.lab
    assert cards.processes(lab.card_pi(CONTROLLER))
    lab.state_file.unlink()  # a crashed enroll-lab: teardown by prefix and cgroup only
    Lab(lab.state_dir).down()
    assert lab_leftovers(lab) == []
    assert rootfs.cached(lab.state_dir) is not None


def _nodes(cl: CardLab) -> list[dict[str, str]]:
    return [n for n in (cl.node(h) for h in (CONTROLLER, "PiCard-W3", "PiCard-W4")) if n]
