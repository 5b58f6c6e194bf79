"""enrollctl's pure helpers, its one-line errors and its failover between controllers
(real TLS servers on loopback; the journeys are in the lab tests)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from controller.enrollctl import _cell, _seconds, _table

from ..helpers import CA
from .conftest import Serve

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("90", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), (" 1h ", 3600),
    ("0", 0),
])
def test_seconds(text: str, seconds: int) -> None:
    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "1w", "h", "1.5h", "-5m", "1 h", "10mm", "1H"])
def test_seconds_refuses_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter) as err:
        _seconds(text)
    assert "duration" in str(err.value)


def test_table_aligns_columns() -> None:
    rows = [{"hostname": "PiLike-03", "state": "pending", "extra": "x"},
            {"hostname": "a", "state": None}]
    assert _table(rows, ["hostname", "state"]).splitlines() == [
        "HOSTNAME   STATE",
        "PiLike-03  pending",
        "a",
    ]


def test_table_with_no_rows_is_header_only() -> None:
    assert _table([], ["id", "description"]) == "ID  DESCRIPTION"


def test_cells() -> None:
    assert _cell(["10.0.0.1", "10.0.0.2"]) == "10.0.0.1,10.0.0.2"
    assert _cell({"zone": "a", "rack": "1"}) == "zone=a,rack=1"
    assert _cell(None) == ""
    assert _cell(3) == "3"
    at = 1_750_000_000.5
    assert _cell(at) == datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _enrollctl(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENROLLCTL_")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra_env)
    code = "import sys; from controller.enrollctl import main; sys.argv[0] = 'enrollctl'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_url_is_one_line_error(tmp_path: Path) -> None:
    line = _one_line_error(_enrollctl(tmp_path, "nodes"))
    assert line.startswith("Error:") and "URL" in line


def test_missing_pin_is_one_line_error(tmp_path: Path) -> None:
    line = _one_line_error(_enrollctl(tmp_path, "--url", "https://127.0.0.1:1", "tokens"))
    assert "no_pin" in line


def test_bad_config_file_is_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "enrollctl.toml"
    config.write_text('url = "https://127.0.0.1:1"\npassword = "x"\n')
    line = _one_line_error(_enrollctl(tmp_path, "--config", str(config), "nodes"))
    assert "password" in line


def test_a_named_config_file_that_is_missing_is_one_line_error(tmp_path: Path) -> None:
    """A typo in --config must not fall back silently to the environment's settings."""
    missing = tmp_path / "enrolctl.toml"
    line = _one_line_error(_enrollctl(tmp_path, "--config", str(missing), "--url",
                                      "https://127.0.0.1:1", "nodes"))
    assert str(missing) in line and "no such config file" in line
    env_line = _one_line_error(_enrollctl(tmp_path, "nodes", ENROLLCTL_CONFIG=str(missing)))
    assert "no such config file" in env_line


def test_the_default_config_file_may_be_missing_and_dev_null_reads_none(
        tmp_path: Path) -> None:
    (tmp_path / ".config/swarm-enroll").mkdir(parents=True)
    for args in ([], ["--config", "/dev/null"]):
        line = _one_line_error(_enrollctl(tmp_path, *args, "nodes"))
        assert "no controller URL" in line  # got past the config file
    (tmp_path / ".config/swarm-enroll/enrollctl.toml").write_text(
        'url = "https://127.0.0.1:1"\n')
    assert "no controller URL" not in _one_line_error(_enrollctl(tmp_path, "nodes"))
    assert "no controller URL" in _one_line_error(
        _enrollctl(tmp_path, "--config", "/dev/null", "nodes"))


def test_an_ambiguous_name_shows_the_claimants_to_choose_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from agent.wire.errors import WireError
    from controller import enrollctl

    claimants = [
        {"id": "enr_aaa", "state": "pending", "kind": "new", "fingerprint": "3f2a-9c41-07be",
         "hardware_id": "00000000a1b2c302", "source": "192.168.1.12", "first_seen": 1.8e9,
         "last_seen": 1.8e9},
        {"id": "enr_bbb", "state": "pending", "kind": "replacement",
         "fingerprint": "d00d-f00d-beef", "hardware_id": "ffff", "source": "192.168.1.66",
         "first_seen": 1.8e9, "last_seen": 1.8e9}]
    asked: list[tuple[str, str, str]] = []

    class Client:
        def approve(self, ref: str, reason: str, fingerprint: str) -> dict[str, str]:
            asked.append((ref, reason, fingerprint))
            if not fingerprint:
                raise WireError("ambiguous", "PiLike-02 has 2 claims", 409,
                                {"claimants": claimants})
            return {"id": "enr_aaa", "hostname": "PiLike-02", "state": "approved"}

    monkeypatch.setattr(enrollctl.Context, "client", property(lambda self: Client()))
    runner = CliRunner()
    args = ["--config", "/dev/null", "nodes", "approve", "PiLike-02"]
    refused = runner.invoke(enrollctl.main, args)
    assert refused.exit_code == 1
    assert "FINGERPRINT" in refused.stderr and "3f2a-9c41-07be" in refused.stderr
    assert "192.168.1.66" in refused.stderr and "replacement" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: ambiguous: 2 Pis")
    approved = runner.invoke(enrollctl.main, [*args, "--fingerprint", "3f2a-9c41-07be"])
    assert approved.exit_code == 0 and "approved" in approved.output
    assert asked[-1] == ("PiLike-02", "", "3f2a-9c41-07be")


def test_enrollctl_passes_over_an_impostor_among_its_urls_and_says_who_answered(
        ca: CA, serve: Serve, dead_url: str, tmp_path: Path) -> None:
    """`--url` lists every manager's controller; one of them is an impostor on the LAN,
    one is dead. With the CA fetched by the pin check, then again with it cached (so each
    URL is tried with verified TLS): the real one answers, and stderr says so."""
    from click.testing import CliRunner

    from controller import enrollctl

    rogue, rogue_saw = serve(impostor=True)
    real, _ = serve()
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "ENROLLCTL_TOKEN": "sea_x", "ENROLLCTL_CA_FILE": ""}
    args = ["--url", f"{rogue},{dead_url},{real}", "--pin", ca.pin, "--json", "health"]
    for check in ("pin_mismatch", "tls_failed"):
        result = CliRunner().invoke(enrollctl.main, args, env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["status"] == "ok"
        said = result.stderr.splitlines()
        assert said[0].startswith(f"(passed over {rogue}: {check}: ")
        assert said[1].startswith(f"(passed over {dead_url}: unreachable: ")
        assert said[2:] == [f"(answered by {real})"]
    assert rogue_saw.requests == []


def test_a_refusal_says_which_controller_refused_and_which_were_passed_over(
        ca: CA, serve: Serve, dead_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from controller import enrollctl

    real, _ = serve()
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "ENROLLCTL_TOKEN": "sea_x", "ENROLLCTL_CA_FILE": ""}
    args = ["--url", f"{dead_url},{real}", "--pin", ca.pin, "nodes", "approve", "pi-9"]
    result = CliRunner().invoke(enrollctl.main, args, env=env)
    assert result.exit_code == 1
    said = result.stderr.splitlines()
    assert said[0].startswith(f"(passed over {dead_url}: unreachable: ")
    assert said[1:] == [f"(answered by {real})", "Error: not_found: no such node"]


def test_enrollctl_names_each_url_and_why_when_none_answers(
        ca: CA, serve: Serve, dead_url: str, tmp_path: Path) -> None:
    rogue, _ = serve(impostor=True)
    token = "sea_unit-secret-never-shown"
    line = _one_line_error(_enrollctl(tmp_path, "--url", f"{rogue},{dead_url}", "--pin",
                                      ca.pin, "--token", token, "nodes"))
    assert line.startswith("Error: unreachable: ")
    assert f"{rogue}: pin_mismatch: " in line and f"{dead_url}: unreachable: " in line
    assert token not in line


@pytest.mark.parametrize("ttl", ["0s", "400d"])
def test_a_token_lifetime_out_of_range_is_refused_before_asking(ttl: str,
                                                                dead_url: str) -> None:
    from click.testing import CliRunner

    from controller import enrollctl

    result = CliRunner().invoke(enrollctl.main, [
        "--config", "/dev/null", "--url", dead_url, "--pin",
        "sha256:" + "ab" * 32, "--token", "sea_x", "tokens", "create", "--ttl", ttl])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '--ttl': '{ttl}': a token lives from 1s to 365d" in result.stderr


def test_baseline_shows_a_failed_tasks_error_while_not_converged_or_lately(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after the demo, nginx's newest failed task was one the swarm moved off a
    promoted Pi ('no longer meets constraints'): shown, it looked like a failure."""
    from click.testing import CliRunner

    from controller import enrollctl

    def service(name: str, converged: bool, ago: float) -> dict[str, Any]:
        return {"name": name, "running_tasks": 5, "desired_tasks": 5, "in_sync": True,
                "converged": converged, "error": "", "changes": [], "warnings": [],
                "image": f"{name}:latest", "nodes": [], "last_result": None, "stuck": None,
                "task_error": "rejected: assigned node no longer meets constraints",
                "task_error_s_ago": ago}

    class Client:
        def baseline(self) -> dict[str, Any]:
            return {"file": "baseline.yml", "file_error": None, "converged": False,
                    "services": [service("nginx", True, 600.0), service("viz", False, 600.0),
                                 service("web", True, 30.0)]}  # a task that crashes now

    monkeypatch.setattr(enrollctl.Context, "client", property(lambda self: Client()))
    out = CliRunner().invoke(enrollctl.main, ["--config", "/dev/null",
                                              "baseline"]).output
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "no longer meets constraints" not in lines["nginx"]
    assert "no longer meets constraints" in lines["viz"]
    assert "no longer meets constraints" in lines["web"]


@pytest.mark.parametrize("command", ["show", "approve", "revoke"])
def test_an_empty_node_reference_is_refused_before_asking(command: str,
                                                          dead_url: str) -> None:
    from click.testing import CliRunner

    from controller import enrollctl

    result = CliRunner().invoke(enrollctl.main, [
        "--config", "/dev/null", "--url", dead_url, "--pin",
        "sha256:" + "ab" * 32, "--token", "sea_x", "nodes", command, " "])
    assert result.exit_code == 2
    assert "Invalid value for 'REF': give a hostname or a record id" in result.stderr
