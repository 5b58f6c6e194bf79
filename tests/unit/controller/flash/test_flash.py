"""`enrollctl flash` onto directories laid out like real boot partitions."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from agent.config import parse_config
from controller.cli import main as controller_main
from controller.flash import cli as flash_cli
from controller.flash import plan as flash_plan
from controller.flash.bootfs import HOOK_ARGS
from controller.flash.cli import flash as flash_command
from controller.flash.wifi import derive_psk

from .conftest import (
    BOOKWORM_CMDLINE,
    IMAGER_USER_DATA,
    PASSPHRASE,
    PIN,
    SSID,
    TOKEN,
    one_line_error,
    tree,
)

Flash = Callable[..., Result]
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJv3PUIJ0b0Hf0x4Xn5wM2Xz5kq7yF0m4Qf1uQbVw7cN "
           "admin@laptop")
PAYLOAD = "swarm-enroll"


def env_of(boot: Path) -> dict[str, str]:
    values = {}
    for line in (boot / PAYLOAD / "firstboot.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = (shlex.split(value) or [""])[0]
    return values


def all_bytes(boot: Path) -> dict[str, bytes]:
    return {p.relative_to(boot).as_posix(): p.read_bytes() for p in boot.rglob("*")
            if p.is_file()}


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(SSH_KEY + "\n")
    return path


def full_args(boot: Path, wheel: Path, secrets_dir: Path, ssh_key: Path) -> list[str | Path]:
    return [boot, "--hostname", "PiLike-09", "--pin", PIN,
            "--token-file", secrets_dir / "token", "--wifi-ssid", SSID,
            "--wifi-psk-file", secrets_dir / "psk", "--wifi-country", "gb",
            "--ssh-key", ssh_key, "--wheel", wheel]


def test_firstrun_card(flash: Flash, bookworm: Path, wheel: Path, secrets_dir: Path,
                       ssh_key: Path) -> None:
    before = tree(bookworm)
    result = flash(*full_args(bookworm, wheel, secrets_dir, ssh_key))
    assert result.exit_code == 0, result.output + result.stderr
    assert "first-run script" in result.output

    for name in ["cmdline.txt.swarm-enroll-orig", f"{PAYLOAD}/firstboot.sh",
                 f"{PAYLOAD}/firstboot.env", f"{PAYLOAD}/agent.toml", f"{PAYLOAD}/README.txt",
                 f"{PAYLOAD}/authorized_keys", f"{PAYLOAD}/dist/{wheel.name}",
                 f"{PAYLOAD}/systemd/enroll-agent.service",
                 f"{PAYLOAD}/systemd/swarm-enroll-firstboot.service",
                 f"{PAYLOAD}/wifi/swarm-enroll-wifi.nmconnection",
                 f"{PAYLOAD}/wifi/wpa_supplicant.conf"]:
        assert (bookworm / name).is_file(), name
    # nothing of the card's own changed but cmdline.txt; no cloud-init files appeared
    after = tree(bookworm)
    assert {k: v for k, v in after.items() if k in before and k != "cmdline.txt"} == \
        {k: v for k, v in before.items() if k != "cmdline.txt"}
    assert not any((bookworm / n).exists() for n in ("user-data", "network-config",
                                                      "meta-data"))

    # cmdline.txt: one line, the original arguments in order, then ours
    cmdline = (bookworm / "cmdline.txt").read_text()
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")
    args = cmdline.split()
    assert args[:len(BOOKWORM_CMDLINE.split())] == BOOKWORM_CMDLINE.split()
    assert args[-4:] == ["cfg80211.ieee80211_regdom=GB", *HOOK_ARGS]
    assert (bookworm / "cmdline.txt.swarm-enroll-orig").read_text() == BOOKWORM_CMDLINE

    # the agent config is one the agent accepts, with pin and token
    agent = tomllib.loads((bookworm / PAYLOAD / "agent.toml").read_text())
    assert agent == {"ca_pin": PIN, "bootstrap_token": TOKEN}
    parse_config(agent)
    env = env_of(bookworm)
    assert (env["SE_HOSTNAME"], env["SE_METHOD"], env["SE_ROLE"], env["SE_WIFI"]) == \
        ("PiLike-09", "firstrun", "agent", "1")
    assert env["SE_WHEEL"] == wheel.name and env["SE_VERSION"] == "0.1.0"
    assert (bookworm / PAYLOAD / "authorized_keys").read_text() == SSH_KEY + "\n"

    # secrets: the passphrase is nowhere, the derived key only in the Wi-Fi files, the
    # token only in agent.toml, and none of them on the command line's output
    psk = derive_psk(SSID, PASSPHRASE).encode()
    for name, data in all_bytes(bookworm).items():
        assert PASSPHRASE.encode() not in data, name
        assert (psk in data) == name.startswith(f"{PAYLOAD}/wifi/"), name
        assert (TOKEN.encode() in data) == (name == f"{PAYLOAD}/agent.toml"), name
    for name in ("agent.toml", "wifi/swarm-enroll-wifi.nmconnection",
                 "wifi/wpa_supplicant.conf"):
        assert (bookworm / PAYLOAD / name).stat().st_mode & 0o077 == 0, name
    assert TOKEN not in result.output + result.stderr
    assert PASSPHRASE not in result.output + result.stderr


def test_cloud_init_card(flash: Flash, cloud_card: Path, wheel: Path, secrets_dir: Path,
                         ssh_key: Path) -> None:
    original_cmdline = (cloud_card / "cmdline.txt").read_text()
    original_network = (cloud_card / "network-config").read_text()
    meta = (cloud_card / "meta-data").read_bytes()
    result = flash(*full_args(cloud_card, wheel, secrets_dir, ssh_key))
    assert result.exit_code == 0, result.output + result.stderr
    assert "cloud-init" in result.output

    # user-data: valid for Debian's cloud-init, Imager's settings kept, ours added
    user_data = cloud_card / "user-data"
    assert user_data.read_text().startswith("#cloud-config\n")
    check = subprocess.run(["cloud-init", "schema", "--config-file", str(user_data)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    data = yaml.safe_load(user_data.read_text())
    original = yaml.safe_load(IMAGER_USER_DATA)
    assert data["hostname"] == "PiLike-09" and data["preserve_hostname"] is False
    for key in ("timezone", "keyboard", "packages", "apt", "ssh_pwauth"):
        assert data[key] == original[key], key
    assert [u["name"] for u in data["users"]] == ["admin"]
    assert data["users"][0]["ssh_authorized_keys"] == [SSH_KEY]
    assert data["users"][0]["passwd"] == original["users"][0]["passwd"]
    assert len(data["runcmd"]) == 1 and "firstboot.sh\" prepare" in data["runcmd"][0][2]
    assert (cloud_card / "user-data.swarm-enroll-orig").read_text() == IMAGER_USER_DATA

    # network-config: YAML, netplan version 2, Wi-Fi with the derived key
    net = yaml.safe_load((cloud_card / "network-config").read_text())
    assert set(net) == {"network"} and net["network"]["version"] == 2
    wlan = net["network"]["wifis"]["wlan0"]
    assert wlan["access-points"] == {SSID: {"password": derive_psk(SSID, PASSPHRASE)}}
    assert wlan["regulatory-domain"] == "GB" and wlan["dhcp4"] is True
    assert (cloud_card / "network-config.swarm-enroll-orig").read_text() == original_network

    # the card's meta-data (Imager's instance id) stays; no hook in cmdline.txt
    assert (cloud_card / "meta-data").read_bytes() == meta
    cmdline = (cloud_card / "cmdline.txt").read_text()
    assert cmdline == original_cmdline.rstrip("\n") + " cfg80211.ieee80211_regdom=GB\n"
    assert "systemd.run" not in cmdline
    # cloud-init does hostname, Wi-Fi and SSH: the payload has only what first boot needs
    assert not (cloud_card / PAYLOAD / "wifi").exists()
    assert not (cloud_card / PAYLOAD / "authorized_keys").exists()
    assert env_of(cloud_card)["SE_METHOD"] == "cloud-init"
    for name, data_ in all_bytes(cloud_card).items():
        assert PASSPHRASE.encode() not in data_, name
        assert (TOKEN.encode() in data_) == (name == f"{PAYLOAD}/agent.toml"), name


def test_schema_check_catches_a_broken_user_data(tmp_path: Path) -> None:
    # the check used above can fail: a users entry of the wrong type is refused
    bad = tmp_path / "user-data"
    bad.write_text("#cloud-config\nusers: 3\n")
    check = subprocess.run(["cloud-init", "schema", "--config-file", str(bad)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0


def test_cloud_init_card_without_meta_data_gets_one(flash: Flash, cloud_card: Path,
                                                   wheel: Path, secrets_dir: Path) -> None:
    (cloud_card / "meta-data").unlink()
    result = flash(cloud_card, "--hostname", "PiLike-09", "--pin", PIN, "--wheel", wheel)
    assert result.exit_code == 0, result.stderr
    meta = yaml.safe_load((cloud_card / "meta-data").read_text())
    assert meta == {"instance-id": "swarm-enroll-pilike-09", "local-hostname": "PiLike-09"}
    # no Wi-Fi given: the card's network-config is left alone
    assert not (cloud_card / "network-config.swarm-enroll-orig").exists()


@pytest.mark.parametrize("card", ["bookworm", "cloud_card"])
def test_running_flash_again_gives_the_same_card(
    card: str, request: pytest.FixtureRequest, flash: Flash, wheel: Path, secrets_dir: Path,
    ssh_key: Path,
) -> None:
    boot: Path = request.getfixturevalue(card)
    args = full_args(boot, wheel, secrets_dir, ssh_key)
    assert flash(*args).exit_code == 0
    first = tree(boot)
    result = flash(*args)
    assert result.exit_code == 0, result.stderr
    assert tree(boot) == first
    cmdline = (boot / "cmdline.txt").read_text()
    assert cmdline.count("systemd.run=") == (1 if card == "bookworm" else 0)
    assert cmdline.count("ieee80211_regdom") == 1
    if card == "cloud_card":
        data = yaml.safe_load((boot / "user-data").read_text())
        assert len(data["runcmd"]) == 1
        assert data["users"][0]["ssh_authorized_keys"] == [SSH_KEY]


def test_flashing_again_with_other_options_leaves_no_trace_of_the_first(
    flash: Flash, bookworm: Path, cloud_card: Path, wheel: Path, secrets_dir: Path,
    ssh_key: Path,
) -> None:
    assert flash(*full_args(bookworm, wheel, secrets_dir, ssh_key)).exit_code == 0
    assert flash(bookworm, "--hostname", "PiLike-10", "--pin", PIN, "--wheel",
                 wheel).exit_code == 0
    assert not (bookworm / PAYLOAD / "wifi").exists()
    assert not (bookworm / PAYLOAD / "authorized_keys").exists()
    assert tomllib.loads((bookworm / PAYLOAD / "agent.toml").read_text()) == {"ca_pin": PIN}
    assert env_of(bookworm)["SE_HOSTNAME"] == "PiLike-10"

    # a cloud-init card flashed for the first-run path gets its own files back
    original_network = (cloud_card / "network-config").read_text()
    assert flash(*full_args(cloud_card, wheel, secrets_dir, ssh_key)).exit_code == 0
    result = flash(cloud_card, "--hostname", "PiLike-09", "--pin", PIN, "--wheel", wheel,
                   "--method", "firstrun")
    assert result.exit_code == 0, result.stderr
    assert (cloud_card / "user-data").read_text() == IMAGER_USER_DATA
    assert (cloud_card / "network-config").read_text() == original_network
    assert (cloud_card / "cmdline.txt").read_text().split()[-3:] == list(HOOK_ARGS)


def test_imagers_first_run_script_is_chained(flash: Flash, bookworm: Path,
                                             wheel: Path) -> None:
    (bookworm / "firstrun.sh").write_text("#!/bin/bash\nset +e\necho imager\n")
    (bookworm / "cmdline.txt").write_text(
        BOOKWORM_CMDLINE.rstrip("\n") + " systemd.run=/boot/firstrun.sh "
        "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n")
    for _ in range(2):  # the second run still knows about it
        result = flash(bookworm, "--hostname", "PiLike-09", "--pin", PIN, "--wheel", wheel)
        assert result.exit_code == 0, result.stderr
        cmdline = (bookworm / "cmdline.txt").read_text()
        assert cmdline.split() == BOOKWORM_CMDLINE.split() + list(HOOK_ARGS)
        assert env_of(bookworm)["SE_CHAIN"] == "firstrun.sh"
    # a systemd.run= of a script that is not on the card is refused
    (bookworm / "cmdline.txt").write_text(BOOKWORM_CMDLINE.rstrip("\n")
                                          + " systemd.run=/usr/bin/elsewhere\n")
    assert "not on this card" in one_line_error(
        flash(bookworm, "--hostname", "PiLike-09", "--pin", PIN, "--wheel", wheel))


# ---- bad input: one line, exit 1, the card unchanged ------------------------------------

def _bad(tmp_path: Path, boot: Path, secrets_dir: Path) -> dict[str, tuple[list[str], str]]:
    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    wifi = ["--wifi-ssid", SSID, "--wifi-country", "GB"]
    return {
        "no such dir": ([str(tmp_path / "missing"), "--hostname", "pi"], "no such directory"),
        "not a boot partition": ([str(tmp_path / "secrets"), "--hostname", "pi"],
                                 "not a Raspberry Pi boot partition"),
        "no bootfs": ([], "give the mounted boot partition"),
        "no hostname": ([str(boot)], "--hostname is required"),
        "underscore": ([str(boot), "--hostname", "pi_3"], "RFC 1123"),
        "leading hyphen": ([str(boot), "--hostname", "-pi"], "RFC 1123"),
        "dotted": ([str(boot), "--hostname", "pi.lan"], "one label"),
        "too long": ([str(boot), "--hostname", "p" * 64], "RFC 1123"),
        "no pin": ([str(boot), "--hostname", "pi"], "no CA pin"),
        "short pin": ([str(boot), "--hostname", "pi", "--pin", "sha256:abcd"], "--pin"),
        "md5 pin": ([str(boot), "--hostname", "pi", "--pin", "md5:" + "ab" * 32], "--pin"),
        "psk too short": ([str(boot), "--hostname", "pi", "--pin", PIN, *wifi,
                           "--wifi-psk-file", write("psk7", "1234567\n")], "8 to 63"),
        "psk too long": ([str(boot), "--hostname", "pi", "--pin", PIN, *wifi,
                          "--wifi-psk-file", write("psk64", "z" * 64)], "8 to 63"),
        "psk 65 hex": ([str(boot), "--hostname", "pi", "--pin", PIN, *wifi,
                        "--wifi-psk-file", write("psk65", "a" * 65)], "8 to 63"),
        "psk not ascii": ([str(boot), "--hostname", "pi", "--pin", PIN, *wifi,
                           "--wifi-psk-file", write("pskü", "grüße-an-alle\n")], "ASCII"),
        "no psk, no terminal": ([str(boot), "--hostname", "pi", "--pin", PIN, *wifi],
                                "--wifi-psk-file"),
        "no country": ([str(boot), "--hostname", "pi", "--pin", PIN, "--wifi-ssid", SSID,
                        "--wifi-psk-file", str(secrets_dir / "psk")], "--wifi-country"),
        "country without ssid": ([str(boot), "--hostname", "pi", "--pin", PIN,
                                  "--wifi-country", "GB"], "need --wifi-ssid"),
        "bad token": ([str(boot), "--hostname", "pi", "--pin", PIN, "--token-file",
                       write("tok", "hunter2\n")], "bootstrap token"),
        "admin token": ([str(boot), "--hostname", "pi", "--pin", PIN, "--token-file",
                         write("admin", "sea_" + "x" * 43)], "admin token"),
        "two token sources": ([str(boot), "--hostname", "pi", "--pin", PIN, "--token-stdin",
                               "--token-file", str(secrets_dir / "token")], "not both"),
        "no token file": ([str(boot), "--hostname", "pi", "--pin", PIN, "--token-file",
                           str(tmp_path / "nope")], "no such file"),
        "http url": ([str(boot), "--hostname", "pi", "--pin", PIN, "--controller-url",
                      "http://10.0.0.1:8443"], "https://"),
        "private key": ([str(boot), "--hostname", "pi", "--pin", PIN, "--ssh-key",
                         write("id", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")],
                        "private key"),
        "bad method": ([str(boot), "--hostname", "pi", "--pin", PIN, "--method", "imager"],
                       "--method"),
        "not a wheel": ([str(boot), "--hostname", "pi", "--pin", PIN, "--wheel",
                         write("x.whl", "zip?")], "not a swarm-enroll wheel"),
        "no controller state": ([str(boot), "--hostname", "pi", "--controller-state",
                                 str(tmp_path / "nostate")], "--controller-state"),
    }


BAD_CASES = ["no such dir", "not a boot partition", "no bootfs", "no hostname", "underscore",
             "leading hyphen", "dotted", "too long", "no pin", "short pin", "md5 pin",
             "psk too short", "psk too long", "psk 65 hex", "psk not ascii",
             "no psk, no terminal", "no country", "country without ssid", "bad token",
             "admin token", "two token sources", "no token file", "http url", "private key",
             "bad method", "not a wheel", "no controller state"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_changes_nothing(
    case: str, flash: Flash, tmp_path: Path, bookworm: Path, wheel: Path, secrets_dir: Path,
) -> None:
    args, message = _bad(tmp_path, bookworm, secrets_dir)[case]
    if "--wheel" not in args and len(args) > 1:
        args = [*args, "--wheel", str(wheel)]
    before = tree(tmp_path)
    line = one_line_error(flash(*args))
    assert message in line, line
    assert tree(tmp_path) == before
    assert PASSPHRASE not in line and TOKEN not in line


def test_bad_input_on_a_flashed_card_changes_nothing(flash: Flash, cloud_card: Path,
                                                     wheel: Path, secrets_dir: Path,
                                                     tmp_path: Path) -> None:
    assert flash(cloud_card, "--hostname", "PiLike-09", "--pin", PIN, "--wheel",
                 wheel).exit_code == 0
    before = tree(tmp_path)
    psk = tmp_path / "short"
    psk.write_text("short")
    before = tree(tmp_path)
    one_line_error(flash(cloud_card, "--hostname", "PiLike-09", "--pin", PIN, "--wheel", wheel,
                         "--wifi-ssid", SSID, "--wifi-country", "GB", "--wifi-psk-file", psk))
    assert tree(tmp_path) == before


def test_broken_user_data_is_refused_and_left_alone(flash: Flash, cloud_card: Path,
                                                    wheel: Path, tmp_path: Path) -> None:
    (cloud_card / "user-data").write_text("#!/bin/sh\necho a script\n")
    before = tree(tmp_path)
    line = one_line_error(flash(cloud_card, "--hostname", "pi", "--pin", PIN, "--wheel", wheel))
    assert "--method firstrun" in line
    (cloud_card / "user-data").write_text("#cloud-config\nusers: [\n")
    before = tree(tmp_path)
    assert "not valid YAML" in one_line_error(
        flash(cloud_card, "--hostname", "pi", "--pin", PIN, "--wheel", wheel))
    assert tree(tmp_path) == before


def test_a_full_card_is_refused_before_writing(flash: Flash, bookworm: Path, wheel: Path,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(flash_plan.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=100 * 1024))
    before = tree(tmp_path)
    assert "KiB free" in one_line_error(
        flash(bookworm, "--hostname", "pi", "--pin", PIN, "--wheel", wheel))
    assert tree(tmp_path) == before


# ---- secrets: from a file, stdin or a prompt, never an argument -------------------------

def test_no_option_takes_a_secret_value() -> None:
    secret_words = ("token", "psk", "password", "passphrase", "secret")
    for param in flash_command.params:
        if any(w in param.name for w in secret_words):
            assert param.name.endswith("_file") or getattr(param, "is_flag", False), param.name


def test_token_from_stdin(flash: Flash, bookworm: Path, wheel: Path) -> None:
    result = flash(bookworm, "--hostname", "pi", "--pin", PIN, "--wheel", wheel,
                   "--token-stdin", input=TOKEN + "\n")
    assert result.exit_code == 0, result.stderr
    assert tomllib.loads((bookworm / PAYLOAD / "agent.toml").read_text())[
        "bootstrap_token"] == TOKEN


def test_passphrase_prompt(flash: Flash, bookworm: Path, wheel: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flash_cli, "_interactive", lambda: True)
    result = flash(bookworm, "--hostname", "pi", "--pin", PIN, "--wheel", wheel,
                   "--wifi-ssid", SSID, "--wifi-country", "GB",
                   input=f"{PASSPHRASE}\n{PASSPHRASE}\n")
    assert result.exit_code == 0, result.stderr
    nm = (bookworm / PAYLOAD / "wifi" / "swarm-enroll-wifi.nmconnection").read_text()
    assert f"psk={derive_psk(SSID, PASSPHRASE)}" in nm
    assert PASSPHRASE not in result.output + result.stderr


def test_pin_from_enrollctl_settings(bookworm: Path, wheel: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.enrollctl import main

    monkeypatch.setenv("ENROLLCTL_PIN", PIN.upper().replace("SHA256", "sha256"))
    result = CliRunner().invoke(main, ["--config", "/dev/null", "flash", str(bookworm),
                                       "--hostname", "pi", "--wheel", str(wheel)])
    assert result.exit_code == 0, result.stderr
    assert tomllib.loads((bookworm / PAYLOAD / "agent.toml").read_text()) == {"ca_pin": PIN}


# ---- the controller's own card ----------------------------------------------------------

@pytest.fixture
def controller_state(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "controller-state"
    result = CliRunner().invoke(controller_main, [
        "init", "--no-swarm-init", "--state-dir", str(state), "--advertise-addr",
        "192.168.1.10", "--hostname", "PiLike-01", "--json"])
    assert result.exit_code == 0, result.output
    import json
    return state, json.loads(result.output)["pin"]


def test_controller_card(flash: Flash, bookworm: Path, wheel: Path,
                         controller_state: tuple[Path, str]) -> None:
    state, pin = controller_state
    result = flash(bookworm, "--hostname", "PiLike-01", "--controller-state", state,
                   "--wheel", wheel)
    assert result.exit_code == 0, result.stderr
    assert "192.168.1.10" in result.output
    agent = tomllib.loads((bookworm / PAYLOAD / "agent.toml").read_text())
    assert agent == {"ca_pin": pin}
    env = env_of(bookworm)
    assert (env["SE_ROLE"], env["SE_ADVERTISE_ADDR"]) == ("controller", "192.168.1.10")
    carried = bookworm / PAYLOAD / "controller"
    names = {p.name for p in carried.iterdir()}
    assert {"ca.pem", "ca-key.pem", "tls.pem", "tls-key.pem", "controller.toml", "rules.toml",
            "state.db"} <= names
    # all of the state dir (whatever init puts there), the database without -wal/-shm
    assert names == {p.name for p in state.iterdir()} - {"state.db-wal", "state.db-shm"}
    for name in names - {"state.db"}:
        assert (carried / name).read_bytes() == (state / name).read_bytes()
    with sqlite3.connect(carried / "state.db") as db:  # a consistent copy, admin included
        assert db.execute("select count(*) from docs where key like 'admin/%'"
                          ).fetchone()[0] == 1
    assert all(p.stat().st_mode & 0o077 == 0 for p in carried.iterdir())


def test_controller_card_must_match(flash: Flash, bookworm: Path, wheel: Path, tmp_path: Path,
                                    controller_state: tuple[Path, str]) -> None:
    state, _ = controller_state
    before = tree(tmp_path)
    assert "--hostname PiLike-01" in one_line_error(
        flash(bookworm, "--hostname", "PiLike-02", "--controller-state", state, "--wheel",
              wheel))
    assert "does not match" in one_line_error(
        flash(bookworm, "--hostname", "PiLike-01", "--controller-state", state, "--pin", PIN,
              "--wheel", wheel))
    (state / "tls-key.pem").unlink()
    before = tree(tmp_path)
    assert "incomplete" in one_line_error(
        flash(bookworm, "--hostname", "PiLike-01", "--controller-state", state, "--wheel",
              wheel))
    assert tree(tmp_path) == before
