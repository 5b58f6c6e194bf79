"""A card flashed by `enrollctl flash`: the agent config it carries enrolls a Pi for real.

The first boot is left out here (tests/cards/ boots whole cards under systemd); what is
tested is that the agent.toml written onto the card, given unchanged to a lab Pi's agent
(plus only what the lab needs: its docker socket, state dir, address, board serial),
makes that Pi find the controller, enroll with the bootstrap token and join the swarm.
"""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.enrollctl import main as enrollctl
from deploy.lab.demo import swarm_nodes, wait_for

from .conftest import Cluster, wait_log

pytestmark = pytest.mark.lab

LAB_KEYS = {"state_dir", "docker_host", "hardware_id", "advertise_addr", "model", "arch",
            # how the lab's agent would run a controller, were its Pi a manager
            "controller_dir", "controller_unit", "controller_command", "controller_log"}


def test_flashed_agent_config_enrolls_and_joins(cluster: Cluster, tmp_path: Path) -> None:
    status = cluster.status
    created = cluster.admin.create_token(600, 1, "PiLike-3*", "flash e2e")
    token_file = tmp_path / "token"
    token_file.write_text(created["token"] + "\n")
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=serial0,115200 console=tty1 "
                                      "root=PARTUUID=4e639091-02 rootwait quiet\n")
    (boot / "config.txt").write_text("[all]\n")
    wheel = tmp_path / "swarm_enroll-0.1.0-py3-none-any.whl"  # the lab runs this tree
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("agent/__init__.py", "")
        zf.writestr("agent/cli.py", "")

    result = CliRunner().invoke(enrollctl, [
        "--config", "/dev/null", "flash", str(boot), "--hostname", "PiLike-31",
        "--pin", status["pin"], "--token-file", str(token_file), "--wheel", str(wheel)])
    assert result.exit_code == 0, result.output + result.stderr

    settings = tomllib.loads((boot / "swarm-enroll" / "agent.toml").read_text())
    assert settings == {"ca_pin": status["pin"], "bootstrap_token": created["token"]}
    cluster.lab.add_pi("PiLike-31", agent_settings=settings)

    # the Pi runs with exactly the flashed settings, plus the lab's own plumbing
    used = tomllib.loads((cluster.lab.pi_dir("PiLike-31") / "agent.toml").read_text())
    assert {k: v for k, v in used.items() if k not in LAB_KEYS} == settings

    wait_log(cluster.lab.log_path("PiLike-31", "agent"), ": joined", timeout=120)
    node = next(n for n in swarm_nodes(cluster.lab, "PiLike-01")
                if n["hostname"] == "PiLike-31")
    assert (node["state"], node["role"]) == ("ready", "worker")
    approvals = wait_for("the approval, seen by the admin's controller", lambda: [
        e for e in cluster.admin.audit(hostname="PiLike-31") if e["action"] == "node.approve"],
        30)
    assert len(approvals) == 1 and approvals[0]["actor"] == f"token:{created['id']}"
