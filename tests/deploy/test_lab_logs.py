"""`enroll-lab logs`: all of a Pi's logs, one, or several chosen (each flag counts)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from deploy.lab.cli import main


def _logs(state: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--state-dir", str(state), "logs", "PiLike-01", *args])
    return result.exit_code, result.output


def test_each_log_chosen_is_printed(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    pi = state / "PiLike-01"
    pi.mkdir(parents=True)
    (pi / "agent.log").write_text("agent line\n")
    (pi / "dockerd.log").write_text("docker line\n")
    assert _logs(state, "--agent") == (0, "agent line\n")  # one: as it is
    code, out = _logs(state, "--agent", "--docker")  # both (the last flag won before)
    assert code == 0
    assert out == (f"==> {pi / 'dockerd.log'} <==\ndocker line\n"
                   f"==> {pi / 'agent.log'} <==\nagent line\n")
    assert _logs(state) == (0, out)  # all that there are
    code, out = _logs(state, "--agent", "--console")
    assert code == 1 and f"{pi / 'console.log'} does not exist" in out
