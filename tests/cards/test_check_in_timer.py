"""The check-in under a real systemd timer: a joined card Pi whose agent is not resident
learns through `enroll-agent check`, run by enroll-agent-check.timer, that a controller
died (it checks in through another) and that it was revoked (it leaves the swarm); and
promoted, it serves a controller, started by enroll-controller-ensure.timer.

Three managers, each with its controller (two by rule, one promoted by the quorum
keeper), and one worker that boots a flashed card: the shipped units under a real
systemd, the first boot enabling the timers. The lab's Debian root has no avahi-daemon,
so the agent would stay resident there: the test stops it (`systemctl stop`), which is
where the agent exits by itself on a Pi where avahi runs. The interval is shortened the
way the README says (`systemctl edit`: a drop-in), to 15 s.

The tests run in file order on one lab.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.wire.errors import WireError
from controller.adminclient import AdminClient
from controller.enrollctl import main as enrollctl
from deploy.lab.config import load_cluster
from deploy.lab.demo import admin_client, run_demo, swarm_nodes, wait_for
from deploy.lab.lab import CONTROLLER_PORT, Lab, LabError

from .conftest import CardLab, Flash

pytestmark = pytest.mark.lab

PI = "PiCard-T1"
INTERVAL = 15  # seconds between check-ins in this test (the drop-in below)
WAIT = 4 * INTERVAL  # an outcome is waited for a few intervals, never timed
DROP_IN = f"""[Timer]
OnCalendar=
OnCalendar=*:*:0/{INTERVAL}
RandomizedDelaySec=5s
AccuracySec=1s
"""
RULES = """\
[[rule]]
match = "PiLike-0[12]"
role = "manager"
approve = "manual"

[[rule]]
match = "*"
role = "worker"
approve = "token"

[quorum]
managers = 3
promote = "PiLike-03"
"""
CHECKED_IN = re.compile(r"checked in with (https://\S+): joined")


@pytest.fixture(scope="module")
def ha_lab(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardLab]:
    """PiLike-01..03 managers, each serving a controller; card Pis join them."""
    lab = Lab()
    request.addfinalizer(lab.down)
    d = tmp_path_factory.mktemp("cluster")
    (d / "rules.toml").write_text(RULES)
    pis = "".join(f'\n[[pi]]\nname = "PiLike-0{i}"\nmodel = "Raspberry Pi 3 Model B Rev 1.2"'
                  f'\narch = "armv7l"\nhardware_id = "00000000a1b2c40{i}"\n'
                  for i in (1, 2, 3))
    (d / "cluster.toml").write_text('[lab]\nsubnet = "198.18.0.0/24"\nrules = "rules.toml"\n'
                                    'controller = "PiLike-01"\n' + pis)
    lab.rootfs()
    run_demo(lab, load_cluster(d / "cluster.toml"), say=print)
    wait_for("three controllers", lambda: len(lab.status()["controllers"]) == 3, 60)
    yield CardLab(lab, admin_client(lab), lab.status()["pin"], "PiLike-02")


def check_ins(lab: CardLab) -> str:
    """The check-in service's journal of this boot."""
    return lab.os(PI, "journalctl", "--no-pager", "-b", "-o", "cat",
                  "-u", "enroll-agent-check.service")


def next_check_in(lab: CardLab, pattern: re.Pattern[str]) -> tuple[re.Match[str], str]:
    """The first match of `pattern` in the check-ins that run from now on, and their log."""
    seen = len(check_ins(lab))

    def check() -> tuple[re.Match[str], str] | None:
        new = check_ins(lab)[seen:]
        match = pattern.search(new)
        return (match, new) if match else None
    return wait_for(f"a check-in matching {pattern.pattern!r}", check, WAIT)


def main_status(lab: CardLab) -> str:
    return lab.os(PI, "systemctl", "show", "--property=ExecMainStatus", "--value",
                  "enroll-agent-check.service")


def unit_state(lab: CardLab, unit: str) -> str:
    res = lab.lab.os_exec(PI, ["systemctl", "is-active", unit], capture_output=True)
    return res.stdout.strip()


def serving(lab: CardLab) -> bool:
    """The card Pi's controller answers over the pinned TLS."""
    status = lab.lab.status()
    url = f"https://{lab.lab.node(PI)['ip']}:{CONTROLLER_PORT}"
    try:
        return lab.pin == AdminClient(url, status["admin_token"], ca_file=Path(
            status["ca"]), timeout=5).health()["ca"]
    except WireError:
        return False


def units_journal(lab: CardLab) -> str:
    """For a failure: the ensure timer's and the controller's state and journal."""
    units = ["enroll-controller-ensure.timer", "enroll-controller-ensure.service",
             "enroll-controller.service"]
    status = lab.lab.os_exec(PI, ["systemctl", "status", "--no-pager", *units],
                             capture_output=True, timeout=60).stdout
    return status + lab.os(PI, "journalctl", "--no-pager", "-b", "-n", "80",
                           *[a for u in units for a in ("-u", u)])


def test_joined_pi_without_its_agent_checks_in_by_the_timer(ha_lab: CardLab,
                                                            flash: Flash) -> None:
    token = ha_lab.admin.create_token(900, 1, PI, "check-in timer")["token"]
    ha_lab.lab.add_pi(PI, card=flash(PI, token=token, pin=ha_lab.pin))
    ha_lab.wait_ready(PI)
    ha_lab.wait_joined(PI)
    # the first boot enabled both timers
    for timer in ("enroll-agent-check.timer", "enroll-controller-ensure.timer"):
        assert ha_lab.os(PI, "systemctl", "is-enabled", timer) == "enabled"
        assert ha_lab.os(PI, "systemctl", "is-active", timer) == "active"

    ha_lab.os(PI, "systemctl", "stop", "enroll-agent.service")  # as it exits where avahi runs
    ha_lab.os(PI, "mkdir", "-p", "/etc/systemd/system/enroll-agent-check.timer.d")
    ha_lab.os(PI, "sh", "-c", f"printf '{DROP_IN}' >/etc/systemd/system/"
                              "enroll-agent-check.timer.d/interval.conf")
    ha_lab.os(PI, "systemctl", "daemon-reload")
    ha_lab.os(PI, "systemctl", "restart", "enroll-agent-check.timer")

    answered, _ = next_check_in(ha_lab, CHECKED_IN)
    assert answered.group(1) in {c["url"] for c in ha_lab.lab.status()["controllers"]}
    assert main_status(ha_lab) == "0"
    # the check-in did not need the resident agent, and left nothing running
    assert unit_state(ha_lab, "enroll-agent") == "inactive"
    running = ha_lab.os(PI, "ps", "-eo", "args")
    assert "enroll-agent run" not in running and "agent.daemon" not in running
    assert [r["state"] for r in ha_lab.records(PI)] == ["joined"]


def test_failover_under_the_timer(ha_lab: CardLab) -> None:
    last = CHECKED_IN.findall(check_ins(ha_lab))[-1]
    dead = next(c["name"] for c in ha_lab.lab.status()["controllers"] if c["url"] == last)
    # the controller it used dies with the agent that runs it (lab: its child), and
    # nothing starts it again; the Pi stays a manager of the swarm
    os.kill(ha_lab.lab.node(dead)["agent_pid"], signal.SIGTERM)
    wait_for(f"{dead}'s controller gone", lambda: ha_lab.lab.controller_pid(dead) is None, 60)

    answered, journal = next_check_in(ha_lab, CHECKED_IN)
    assert answered.group(1) != last
    assert f"controller unreachable ({last}" in journal  # tried first, then the next one
    assert main_status(ha_lab) == "0"
    assert unit_state(ha_lab, "enroll-agent") == "inactive"  # no hand-over: another answered
    ha_lab.admin = admin_client(ha_lab.lab, next(
        c["name"] for c in ha_lab.lab.status()["controllers"] if c["url"] == answered.group(1)))


def test_promoted_pi_serves_without_its_agent(ha_lab: CardLab) -> None:
    """enroll-controller-ensure.timer, not the agent, starts the controller on a manager;
    demoted, the controller stops by itself and is not started again."""
    assert unit_state(ha_lab, "enroll-agent") == "inactive"
    assert unit_state(ha_lab, "enroll-controller") == "inactive"  # a worker: none
    # the check-in starts it too (once per run): out of the way, to see the ensure timer's
    ha_lab.os(PI, "systemctl", "stop", "enroll-agent-check.timer")
    ha_lab.lab.exec(ha_lab.manager, ["docker", "node", "promote", PI], check=True,
                    capture_output=True, timeout=60)
    ha_lab.wait_ready(PI, role="manager", timeout=120)
    try:
        wait_for(f"{PI}'s controller serving", lambda: serving(ha_lab), 120)
    except LabError as exc:
        raise AssertionError(f"{exc}\n{units_journal(ha_lab)}") from None
    assert unit_state(ha_lab, "enroll-controller") == "active"
    assert unit_state(ha_lab, "enroll-agent") == "inactive"  # the timer did it
    ran = ha_lab.os(PI, "systemctl", "show", "--value", "--property=ExecMainStartTimestamp",
                    "enroll-controller-ensure.service")
    assert ran.strip(), units_journal(ha_lab)  # it ran past its condition
    # every 30 s on every Pi, yet no line of its own in the journal (LogLevelMax=notice)
    assert ha_lab.os(PI, "journalctl", "--no-pager", "-b", "-o", "cat", "-q",
                     "-u", "enroll-controller-ensure.service").strip() == ""
    ha_lab.os(PI, "systemctl", "start", "enroll-agent-check.timer")

    ha_lab.lab.exec(ha_lab.manager, ["docker", "node", "demote", PI], check=True,
                    capture_output=True, timeout=60)
    wait_for(f"{PI}'s controller stopped", lambda: unit_state(
        ha_lab, "enroll-controller") in ("inactive", "failed"), 120)
    ha_lab.wait_ready(PI, role="worker", timeout=120)
    next_check_in(ha_lab, CHECKED_IN)  # a check-in later, still no controller
    assert unit_state(ha_lab, "enroll-controller") in ("inactive", "failed")


def test_revocation_under_the_timer(ha_lab: CardLab) -> None:
    admin = ha_lab.admin
    status = ha_lab.lab.status()
    revoked = CliRunner().invoke(enrollctl, [
        "--config", "/dev/null", "nodes", "revoke", PI, "--reason", "stolen"], env={
        "ENROLLCTL_URL": admin.url, "ENROLLCTL_PIN": ha_lab.pin,
        "ENROLLCTL_TOKEN": status["admin_token"]})
    assert revoked.exit_code == 0, revoked.output + revoked.stderr
    assert PI not in [n["hostname"] for n in swarm_nodes(ha_lab.lab, ha_lab.manager)]

    next_check_in(ha_lab, re.compile("this Pi was revoked: leaving the swarm"))
    wait_for(f"{PI}'s Docker out of the swarm", lambda: ha_lab.os(
        PI, "docker", "info", "--format", "{{.Swarm.LocalNodeState}}") == "inactive", WAIT)
    wait_for("the check-in's exit status", lambda: main_status(ha_lab) == "4", WAIT)
    progress = ha_lab.os(PI, "cat", "/var/lib/swarm-enroll-agent/enrollment.json")
    assert '"status": "revoked"' in progress and '"reason": "stolen"' in progress
    # and from then on it asks nothing: the next check-ins end at once, still revoked
    next_check_in(ha_lab, re.compile("this Pi was revoked \\(stolen\\): not asking again"))
    assert unit_state(ha_lab, "enroll-agent") == "inactive"
    assert [r["state"] for r in ha_lab.records(PI)] == ["revoked"]
