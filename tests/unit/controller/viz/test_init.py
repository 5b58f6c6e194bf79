"""`enroll-controller init --viz-socket-dir`: where `serve` puts viz's filtered socket."""

from __future__ import annotations

from pathlib import Path

from controller.config import DEFAULT_VIZ_SOCKET_DIR, load_config

from ..baseline.test_init import init


def test_default_and_given_socket_dir_are_written(tmp_path: Path) -> None:
    code, out, state = init(tmp_path / "a")
    assert code == 0, out
    assert load_config(state).viz_socket_dir == DEFAULT_VIZ_SOCKET_DIR
    code, out, state = init(tmp_path / "b", "--viz-socket-dir", "/run/selab/Pi-1/docker-ro")
    assert code == 0, out
    assert load_config(state).viz_socket_dir == "/run/selab/Pi-1/docker-ro"
    code, out, state = init(tmp_path / "c", "--viz-socket-dir", "")
    assert code == 0, out
    assert load_config(state).viz_socket_dir == ""


def test_a_relative_socket_dir_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    code, out, state = init(tmp_path, "--viz-socket-dir", "docker-ro")
    assert code == 1 and "viz_socket_dir must be an absolute path" in out
    assert len(out.strip().splitlines()) == 1 and not state.exists()
