"""`enroll-controller init --baseline FILE`: validated, then copied into the state dir."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from controller.cli import main
from controller.config import load_config

ROOT = Path(__file__).resolve().parents[4]


def init(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    state = tmp_path / "state"
    result = CliRunner().invoke(main, ["init", "--state-dir", str(state), "--advertise-addr",
                                       "10.0.0.1", "--hostname", "ctl-1", "--no-swarm-init",
                                       "--json", *extra])
    return result.exit_code, result.output, state


def test_default_baseline_is_the_shipped_file(tmp_path: Path) -> None:
    code, out, state = init(tmp_path)
    assert code == 0, out
    config = load_config(state)
    assert config.baseline_path == state / "baseline.yml"
    assert config.baseline_path.read_bytes() == (ROOT / "deploy" / "baseline.yml").read_bytes()
    assert json.loads(out)["state_dir"] == str(state)


def test_given_baseline_is_copied(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yml"
    mine.write_text("services:\n  web:\n    image: nginx:1.25\n")
    code, out, state = init(tmp_path, "--baseline", str(mine))
    assert code == 0, out
    assert (state / "baseline.yml").read_text() == mine.read_text()


def test_bad_baseline_stops_init_before_anything_is_made(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  web:\n    image: nginx\n    deploy: {replicas: many}\n")
    code, out, state = init(tmp_path, "--baseline", str(bad))
    assert code == 1
    assert "service 'web', key 'deploy.replicas'" in out
    assert not state.exists()


def test_a_hostname_that_is_not_a_host_name_stops_init(tmp_path: Path) -> None:
    for name in ("bad_name!", "-lead"):
        result = CliRunner().invoke(main, ["init", "--state-dir", str(tmp_path / "s"),
                                           "--advertise-addr", "10.0.0.1", "--hostname",
                                           name, "--no-swarm-init"])
        assert result.exit_code == 1
        assert f"--hostname: hostname {name!r} is not an RFC 1123 name" in result.output
        assert not (tmp_path / "s").exists()
