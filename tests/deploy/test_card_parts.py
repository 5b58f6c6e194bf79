"""The pieces of a card Pi that need no lab: the Debian mirror apt uses, the root's stamp,
what the lab reads from a card (hostname, kernel arguments), and the checks that refuse a
wrong card before anything is created."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.enrollctl import main as enrollctl
from deploy.lab import cards, rootfs
from deploy.lab.cli import main as lab_cli
from deploy.lab.lab import Lab, LabError

PIN = "sha256:" + "ab" * 32


def test_apt_sources_one_line_and_deb822(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64] http://mirror.example/debian/ "
        "bookworm main contrib\n"
        "deb-src http://mirror.example/debian bookworm main\n"
        "deb http://mirror.example/debian trixie main\n")
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n")
    (d / "other.list.disabled-by-farm").write_text("deb http://nope.example bookworm main\n")
    found = rootfs.apt_sources((tmp_path / "sources.list", d))
    assert [(s.uri, s.suite) for s in found] == [
        ("http://mirror.example/debian", "bookworm"),
        ("http://deb.example/debian", "bookworm"),
        ("http://deb.example/debian", "bookworm-updates"),
        ("http://deb.example/debian-security", "bookworm-security"),
    ]


def test_no_debian_mirror_is_one_clear_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "SOURCES", (tmp_path / "sources.list",))
    with pytest.raises(rootfs.RootfsError, match="no Debian 'bookworm' source"):
        rootfs.ensure(tmp_path / "state")
    assert rootfs.cached(tmp_path / "state") is None


def test_the_stamp_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = rootfs.stamp()
    assert rootfs.stamp() == before
    monkeypatch.setattr(rootfs, "PACKAGES", (*rootfs.PACKAGES, "avahi-daemon"))
    assert rootfs.stamp() != before


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """A Bookworm card flashed for PiCard-07 (with a stand-in wheel)."""
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text('console=tty1 dyndbg="file x +p" root=/dev/mmcblk0p2 '
                                      "systemd.show_status=auto quiet\n")
    (boot / "config.txt").write_text("[all]\n")
    wheel = tmp_path / "swarm_enroll-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("agent/__init__.py", "")
        zf.writestr("agent/cli.py", "")
    result = CliRunner().invoke(enrollctl, ["--config", "/dev/null", "flash", str(boot),
                                            "--hostname", "PiCard-07", "--pin", PIN,
                                            "--wheel", str(wheel)])
    assert result.exit_code == 0, result.output + result.stderr
    return boot


def test_read_card(card: Path) -> None:
    info = cards.read_card(card)
    assert (info.hostname, info.method, info.role) == ("PiCard-07", "firstrun", "agent")


def test_kernel_args_are_what_systemd_reads(card: Path) -> None:
    assert cards.kernel_args(card) == [
        "systemd.show_status=auto", "systemd.run=/boot/firmware/swarm-enroll/firstboot.sh",
        "systemd.run_success_action=reboot", "systemd.unit=kernel-command-line.target"]
    (card / "cmdline.txt").write_text("one\ntwo\n")  # broken: the Pi boots its default
    assert cards.kernel_args(card) == []


def test_nspawn_binds_the_card_and_the_pis_docker(card: Path) -> None:
    spec = {"root": "/r", "machine": "selab-PiCard-07", "machine_id": "0" * 32,
            "netns": "/var/run/netns/selab-PiCard-07", "docker_sock": "/run/selab/P/docker.sock",
            "card": str(card)}
    argv = cards.nspawn_argv(spec, ["systemd.unit=x.target"])
    assert f"--bind={card}:/boot/firmware" in argv
    assert "--bind=/run/selab/P/docker.sock:/var/run/docker.sock" in argv
    assert "--network-namespace-path=/var/run/netns/selab-PiCard-07" in argv
    assert argv[-1] == "systemd.unit=x.target"


@pytest.mark.parametrize(("setup", "message"), [
    (lambda c: (c / "config.txt").unlink(), "not a Raspberry Pi boot partition"),
    (lambda c: (c / "swarm-enroll" / "firstboot.env").unlink(), "flash' first"),
])
def test_a_card_that_is_not_flashed_is_refused(card: Path, setup: object,
                                                message: str) -> None:
    setup(card)  # type: ignore[operator]
    with pytest.raises(cards.CardError, match=message):
        cards.read_card(card)


def test_a_card_goes_only_into_the_pi_it_names(card: Path, tmp_path: Path) -> None:
    lab = Lab(state_dir=tmp_path / "lab" / "state", prefix="setest-")
    with pytest.raises(LabError, match="is for 'PiCard-07'"):
        lab.add_pi("PiCard-08", card=card)
    with pytest.raises(LabError, match="settings from the card"):
        lab.add_pi("PiCard-07", card=card, token="lab")
    assert not (tmp_path / "lab" / "state").exists()  # refused before anything was made


def test_cli_add_card_takes_no_token(card: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(lab_cli, ["--state-dir", str(tmp_path / "s"), "add",
                                          "PiCard-07", "--card", str(card), "--lab-token"])
    assert result.exit_code == 2 and "--card takes no --token" in result.output
