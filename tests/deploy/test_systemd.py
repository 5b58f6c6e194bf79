"""The systemd units: systemd itself accepts them, and they keep their promises.

`systemd-analyze verify` needs the units' executables and dependencies to exist, so it
runs against a stand-in root: the host's own units, ours in /etc/systemd/system, and
empty executables where the Pi would have the venv.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config import DEFAULT_CONFIG, AgentConfig
from controller.config import DEFAULT_STATE_DIR, DEFAULT_VIZ_SOCKET_DIR

ROOT = Path(__file__).resolve().parents[2]
UNITS_DIR = ROOT / "deploy" / "systemd"
UNITS = ["enroll-agent.service", "enroll-controller.service", "swarm-enroll-firstboot.service",
         "enroll-agent-check.service", "enroll-agent-check.timer",
         "enroll-controller-ensure.service", "enroll-controller-ensure.timer"]
EXECUTABLES = ["opt/swarm-enroll/bin/enroll-agent", "opt/swarm-enroll/bin/enroll-controller",
               "usr/local/lib/swarm-enroll/firstboot.sh", "usr/bin/sh", "usr/bin/systemctl"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sysroot")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("usr/bin")
    if not (root / "usr/lib/systemd/system/docker.service").exists():  # docker.io's unit
        (root / "usr/lib/systemd/system/docker.service").write_text(
            "[Unit]\nDescription=Docker\n[Service]\nExecStart=/bin/true\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    for exe in EXECUTABLES:
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    for unit in UNITS:
        shutil.copy(UNITS_DIR / unit, root / "etc/systemd/system" / unit)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           f"/etc/systemd/system/{unit}"], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(root: Path, unit: str) -> None:
    result = verify(root, unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # not even a warning


def test_verify_notices_a_broken_unit(root: Path) -> None:
    text = (UNITS_DIR / "enroll-agent.service").read_text()
    broken = root / "etc/systemd/system/broken.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=very"))
    try:
        assert "protect system value" in verify(root, "broken.service").stderr
        broken.write_text(text.replace("/opt/swarm-enroll/bin/enroll-agent",
                                       "/opt/swarm-enroll/bin/nothing"))
        assert verify(root, "broken.service").returncode != 0
    finally:
        broken.unlink()


@pytest.mark.parametrize("unit", ["enroll-agent.service", "enroll-controller.service",
                                  "enroll-agent-check.service",
                                  "enroll-controller-ensure.service"])
def test_units_are_sandboxed(root: Path, unit: str) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                             f"/etc/systemd/system/{unit}"], capture_output=True, text=True,
                            timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout  # systemd calls <= 4.9 "OK"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",),
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS_DIR / name).read_text())
    return parser


@pytest.mark.parametrize("name", ["enroll-agent.service", "enroll-controller.service"])
def test_daemon_units(name: str) -> None:
    u = unit(name)
    after = u["Unit"]["After"].split()
    assert "network-online.target" in after
    # the controller needs a running Docker; the agent starts beside it (its unit says why)
    assert ("docker.service" in after) == (name == "enroll-controller.service")
    assert "network-online.target" in u["Unit"]["Wants"].split()
    assert "docker.service" in u["Unit"]["Requires"].split()
    assert int(u["Unit"]["StartLimitBurst"]) > 1 and u["Unit"]["StartLimitIntervalSec"]
    s = u["Service"]
    assert s["Restart"] == "on-failure" and s["RestartSec"]
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "StateDirectoryMode": "0700"}.items():
        assert s[key] == value, key
    assert "AF_UNIX" in s["RestrictAddressFamilies"].split()  # the Docker socket
    assert "InaccessiblePaths" not in s and "ReadOnlyPaths" not in s
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_units_match_the_programs_defaults() -> None:
    agent = unit("enroll-agent.service")["Service"]
    assert agent["ExecStart"] == f"/opt/swarm-enroll/bin/enroll-agent run --config {DEFAULT_CONFIG}"
    # ProtectSystem=strict leaves only the StateDirectory= writable: it must be the agent's
    assert Path("/var/lib") / agent["StateDirectory"] == AgentConfig.state_dir
    assert Path("/etc") / agent["ConfigurationDirectory"] == DEFAULT_CONFIG.parent
    controller = unit("enroll-controller.service")["Service"]
    assert controller["ExecStart"] == \
        f"/opt/swarm-enroll/bin/enroll-controller serve --state-dir {DEFAULT_STATE_DIR}"
    assert Path("/var/lib") / controller["StateDirectory"] == DEFAULT_STATE_DIR
    # and /run/<RuntimeDirectory>, kept across restarts, holds viz's socket directory
    assert Path("/run") / controller["RuntimeDirectory"] in Path(DEFAULT_VIZ_SOCKET_DIR).parents
    assert controller["RuntimeDirectoryPreserve"] == "yes"


def test_first_boot_unit_retries_until_done() -> None:
    u = unit("swarm-enroll-firstboot.service")
    assert u["Unit"]["ConditionPathExists"] == "!/var/lib/swarm-enroll-firstboot/done"
    assert "network-online.target" in u["Unit"]["After"].split()
    assert u["Unit"]["StartLimitIntervalSec"] == "0"
    assert u["Service"]["Type"] == "oneshot" and u["Service"]["Restart"] == "on-failure"
    assert u["Service"]["ExecStart"] == "/usr/local/lib/swarm-enroll/firstboot.sh install"


def test_backoff_drop_in() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS_DIR / "restart-backoff.conf").read_text())
    assert set(parser["Service"]) == {"RestartSteps", "RestartMaxDelaySec"}


SANDBOX = ["ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
           "CapabilityBoundingSet", "ProtectKernelTunables", "ProtectKernelModules",
           "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
           "ProtectProc", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
           "LockPersonality", "SystemCallArchitectures", "SystemCallFilter",
           "SystemCallErrorNumber", "UMask"]


def test_check_in_service_runs_the_check_once_sandboxed_as_the_agent() -> None:
    from agent.checkin import HANDED_OVER, REVOKED

    agent = unit("enroll-agent.service")["Service"]
    s = unit("enroll-agent-check.service")["Service"]
    assert s["Type"] == "oneshot" and "Restart" not in s
    assert s["ExecStart"] == f"/opt/swarm-enroll/bin/enroll-agent check --config {DEFAULT_CONFIG}"
    assert {s[k] for k in ("StateDirectory", "ConfigurationDirectory")} == \
        {agent[k] for k in ("StateDirectory", "ConfigurationDirectory")}
    assert {k: s[k] for k in SANDBOX} == {k: agent[k] for k in SANDBOX}
    assert set(s["SuccessExitStatus"].split()) == {str(HANDED_OVER), str(REVOKED)}
    ensure = unit("enroll-controller-ensure.service")["Service"]
    assert {k: ensure[k] for k in SANDBOX} == {k: agent[k] for k in SANDBOX}
    assert ensure["ExecStart"] == "/bin/systemctl --no-block start enroll-controller.service"


def test_timers() -> None:
    check = unit("enroll-agent-check.timer")
    assert check["Timer"]["OnCalendar"] == "*:0/5"  # every 5 minutes
    assert check["Timer"]["RandomizedDelaySec"] == "5min"  # jitter: a fleet spreads out
    assert check["Timer"]["Persistent"] == "true"  # a run missed while off: at boot
    ensure = unit("enroll-controller-ensure.timer")["Timer"]
    # issue 11: a promoted Pi serves within 60 s
    assert int(ensure["OnUnitInactiveSec"].removesuffix("s")) + \
        int(ensure["AccuracySec"].removesuffix("s")) < 60
    assert ensure["OnBootSec"]
    for name in ("enroll-agent-check.timer", "enroll-controller-ensure.timer"):
        assert unit(name)["Install"]["WantedBy"] == "timers.target"


def run_condition(name: str, tmp_path: Path, program: str, script: str) -> int:
    """The unit's ExecCondition= as systemd runs it, with a stand-in `program` on PATH."""
    argv = shlex.split(unit(name)["Service"]["ExecCondition"].replace("$$", "$"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / program).write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / program).chmod(0o755)
    return subprocess.run(argv, env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          timeout=30).returncode


@pytest.mark.parametrize(("active", "runs"), [(0, False), (3, True)])
def test_check_in_is_skipped_while_the_resident_agent_runs(tmp_path: Path, active: int,
                                                           runs: bool) -> None:
    script = f'[ "$*" = "--quiet is-active enroll-agent.service" ] || exit 99; exit {active}'
    status = run_condition("enroll-agent-check.service", tmp_path, "systemctl", script)
    assert (status == 0) is runs and status != 255  # 1..254: skipped, not failed


@pytest.mark.parametrize(("says", "starts"), [("echo true", True), ("echo false", False),
                                              ("echo 'Cannot connect' >&2; exit 1", False)])
def test_ensure_starts_the_controller_only_on_a_manager(tmp_path: Path, says: str,
                                                        starts: bool) -> None:
    script = ('[ "$*" = "info --format {{.Swarm.ControlAvailable}}" ] || exit 99\n' + says)
    status = run_condition("enroll-controller-ensure.service", tmp_path, "docker", script)
    assert (status == 0) is starts and status != 255


def test_the_bench_measures_the_units_own_manager_test() -> None:
    from tests.bench.checkin import ENSURE_TEST

    argv = shlex.split(unit("enroll-controller-ensure.service")["Service"]["ExecCondition"]
                       .replace("$$", "$"))
    assert argv[0] == "/bin/sh" and argv[1:] == ENSURE_TEST[1:]
