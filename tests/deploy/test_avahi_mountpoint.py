"""The host's /run/avahi-daemon, shared by lab avahis of labs side by side (the bench
smoke's lab runs beside the test lab's in `make test`): it goes with the last lab's
marker, and an OS's own is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.lab import avahi


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(avahi, "AVAHI_RUN", tmp_path / "avahi-daemon")
    monkeypatch.setattr(avahi, "_LOCK", tmp_path / "avahi.lock")
    return tmp_path / "avahi-daemon"


def test_the_dir_goes_with_the_last_labs_marker(run_dir: Path) -> None:
    assert avahi.claim_mountpoint("selab-PiLike-02")
    assert avahi.claim_mountpoint("selab-PiLike-03")
    assert avahi.claim_mountpoint("sebsmk-PiLike-01")
    assert avahi.lab_markers() == ["sebsmk-PiLike-01", "selab-PiLike-02", "selab-PiLike-03"]

    avahi.remove_mountpoint(["selab-PiLike-02", "selab-PiLike-03", "selab-PiLike-04"])
    # (the test lab's down, naming its Pis' namespaces): the smoke's avahi still binds
    assert run_dir.is_dir() and avahi.lab_markers() == ["sebsmk-PiLike-01"]
    avahi.release_mountpoint("sebsmk-PiLike-01")
    assert not run_dir.exists()


def test_one_avahi_stopping_leaves_the_dir_to_the_others(run_dir: Path) -> None:
    avahi.claim_mountpoint("selab-PiLike-02")
    avahi.claim_mountpoint("sebsmk-PiLike-01")
    avahi.release_mountpoint("selab-PiLike-02")
    assert avahi.lab_markers() == ["sebsmk-PiLike-01"]
    avahi.remove_mountpoint(["se"])  # a name that begins another's is not that one
    assert avahi.lab_markers() == ["sebsmk-PiLike-01"]
    avahi.remove_mountpoint(["sebsmk-PiLike-01"])
    assert not run_dir.exists()


def test_the_oss_own_dir_is_left_alone(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "pid").write_text("1\n")  # an OS avahi's, stopped or not
    assert not avahi.claim_mountpoint("selab-PiLike-02")
    avahi.remove_mountpoint(["selab-PiLike-02"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["pid"]
