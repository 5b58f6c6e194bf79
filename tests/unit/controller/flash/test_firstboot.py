"""The first-boot script, run on a flashed card inside a stand-in root file system.

SE_ROOT puts every path of the "installed system" under a temp dir; the commands that
would change the real machine (systemctl, apt-get, docker, python3 -m venv, pip,
useradd, mount, logger) are stubs that record their arguments. Everything else (install,
cp, sed, awk, shred, ...) is the real thing, on the real files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller.cli import main as controller_main
from controller.flash.bootfs import HOOK_ARGS
from controller.flash.wifi import derive_psk

from .conftest import (
    BOOKWORM_CMDLINE,
    CONFIG_TXT,
    IMAGER_USER_DATA,
    PASSPHRASE,
    PIN,
    SSID,
    TOKEN,
)

Flash = Callable[..., Result]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJv3PUIJ0b0Hf0x4Xn5wM2Xz5kq7yF0m4Qf1uQbVw7cN me"
PSK = derive_psk(SSID, PASSPHRASE)
FSTAB = ("proc            /proc           proc    defaults          0       0\n"
         "PARTUUID=4e639091-01  /boot/firmware  vfat    defaults          0       2\n"
         "PARTUUID=4e639091-02  /               ext4    defaults,noatime  0       1\n")

STUB = """#!/bin/sh
printf '%s\\n' "$(basename "$0") $*" >>"$SE_TEST_DIR/calls"
"""
STUBS = {
    "systemctl": STUB + """
[ "$1" = --version ] && echo "systemd ${SE_TEST_SYSTEMD:-252} (${SE_TEST_SYSTEMD:-252}.38-1)"
exit 0
""",
    "apt-get": STUB + """
if [ -e "$SE_TEST_DIR/fail-apt" ]; then rm -f "$SE_TEST_DIR/fail-apt"; exit 100; fi
case " $* " in *" install "*)
  mkdir -p "$SE_ROOT/usr/sbin"; printf '#!/bin/sh\\n' >"$SE_ROOT/usr/sbin/dockerd"
  chmod +x "$SE_ROOT/usr/sbin/dockerd";;
esac
exit 0
""",
    "docker": STUB + """
case "$*" in
  "info --format"*) cat "$SE_TEST_DIR/swarm" 2>/dev/null || echo inactive;;
  "swarm init"*) echo active >"$SE_TEST_DIR/swarm";;
esac
exit 0
""",
    "python3": STUB + """
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cat >"$3/bin/pip" <<'EOF'
#!/bin/sh
printf '%s\\n' "pip $*" >>"$SE_TEST_DIR/calls"
if [ -e "$SE_TEST_DIR/fail-pip" ]; then rm -f "$SE_TEST_DIR/fail-pip"; exit 1; fi
cat >"$(dirname "$0")/enroll-agent" <<'AGENT'
#!/bin/sh
if [ "$1" = id ]; then echo '{"fingerprint": "3f2a-9c41-07be-d5e0-1b6c"}'
elif [ "$1" = announce ]; then printf '%s\\n' "enroll-agent $*" >>"$SE_TEST_DIR/calls"
  echo /etc/avahi/services/swarm-node.service
else echo "enroll-agent, version 0.1.0"; fi
AGENT
chmod +x "$(dirname "$0")/enroll-agent"
EOF
  chmod +x "$3/bin/pip"
  exit 0
fi
exec "$SE_TEST_PYTHON" "$@"  # python3 -c: the real thing
""",
    "logger": """#!/bin/sh
shift 2; [ "$1" = -- ] && shift
printf '%s\\n' "$*" >>"$SE_TEST_DIR/journal"
""",
    "useradd": STUB + """
for user; do :; done
printf '%s:x:1001:1001::/home/%s:/bin/bash\\n' "$user" "$user" >>"$SE_ROOT/etc/passwd"
mkdir -p "$SE_ROOT/home/$user"
""",
    "mount": STUB,
    "rfkill": STUB,
}


class Pi:
    """A stand-in installed system with the card mounted at /boot/firmware."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.boot = self.root / "boot" / "firmware"
        self.test_dir = base / "test"
        self.stubs = base / "stubs"
        for d in (self.boot, self.test_dir, self.stubs, self.root / "etc" / "NetworkManager"
                  / "system-connections", self.root / "var/lib/systemd/rfkill",
                  self.root / "home/pi"):
            d.mkdir(parents=True, exist_ok=True)
        (self.boot / "cmdline.txt").write_text(BOOKWORM_CMDLINE)
        (self.boot / "config.txt").write_text(CONFIG_TXT)
        etc = self.root / "etc"
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                    "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n")
        (etc / "hostname").write_text("raspberrypi\n")
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
        (etc / "fstab").write_text(FSTAB)
        for f in ("passwd", "hostname", "hosts", "fstab"):
            (etc / f).chmod(0o644)
        (self.root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").write_text("1\n")
        for name, text in STUBS.items():
            (self.stubs / name).write_text(text)
            (self.stubs / name).chmod(0o755)

    def run(self, script: Path, *args: str, systemd: int = 252,
            expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.stubs}:/usr/bin:/bin", "SE_ROOT": str(self.root),
               "SE_TEST_DIR": str(self.test_dir), "SE_TEST_SYSTEMD": str(systemd),
               "SE_TEST_PYTHON": sys.executable,
               "LANG": "C"}
        result = subprocess.run(["sh", str(script), *args], env=env, capture_output=True,
                                text=True, timeout=60)
        if expect is not None:
            assert result.returncode == expect, result.stdout + result.stderr
        return result

    def prepare(self, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(self.boot / "swarm-enroll" / "firstboot.sh", **kw)  # type: ignore

    def install(self, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(self.root / "usr/local/lib/swarm-enroll/firstboot.sh", "install",
                        **kw)  # type: ignore

    def calls(self) -> list[str]:
        path = self.test_dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def journal(self) -> str:
        path = self.test_dir / "journal"
        return path.read_text() if path.exists() else ""

    def mode(self, rel: str) -> int:
        return stat.S_IMODE((self.root / rel).stat().st_mode)


@pytest.fixture
def pi(tmp_path: Path) -> Pi:
    return Pi(tmp_path)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.pub"
    path.write_text(SSH_KEY + "\n")
    return path


def flash_card(flash: Flash, pi: Pi, wheel: Path, secrets_dir: Path, *extra: str | Path,
               wifi: bool = True) -> None:
    args: list[str | Path] = [pi.boot, "--hostname", "PiLike-09", "--wheel", wheel,
                              "--token-file", secrets_dir / "token", *extra]
    if "--controller-state" not in extra:
        args += ["--pin", PIN]
    if wifi:
        args += ["--wifi-ssid", SSID, "--wifi-psk-file", secrets_dir / "psk",
                 "--wifi-country", "GB"]
    result = flash(*args)
    assert result.exit_code == 0, result.stderr


def assert_no_secret_exposed(pi: Pi) -> None:
    """No secret in any argument of any command, and none in a world-readable file."""
    secrets = [TOKEN, PASSPHRASE, PSK]
    for call in pi.calls():
        assert not any(s in call for s in secrets), call
    for s in secrets:
        assert s not in pi.journal()
    for path in pi.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            exposed = [s for s in secrets if s.encode() in data]
            if exposed:
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, exposed)
                assert pi.boot not in path.parents, (path, "still on the boot partition")


def test_firstrun_prepare(flash: Flash, pi: Pi, wheel: Path, secrets_dir: Path,
                          key_file: Path) -> None:
    flash_card(flash, pi, wheel, secrets_dir, "--ssh-key", key_file)
    card_config = (pi.boot / "swarm-enroll/agent.toml").read_bytes()
    pi.prepare()

    # the agent config: off the card, root-only
    assert (pi.root / "etc/swarm-enroll/agent.toml").read_bytes() == card_config
    assert pi.mode("etc/swarm-enroll/agent.toml") == 0o600
    assert pi.mode("etc/swarm-enroll") == 0o700
    assert not (pi.boot / "swarm-enroll/agent.toml").exists()
    # hostname, Wi-Fi (NetworkManager), SSH key
    assert (pi.root / "etc/hostname").read_text() == "PiLike-09\n"
    assert pi.mode("etc/hostname") == 0o644
    assert "127.0.1.1\tPiLike-09" in (pi.root / "etc/hosts").read_text().splitlines()
    nm = "etc/NetworkManager/system-connections/swarm-enroll-wifi.nmconnection"
    assert f"psk={PSK}" in (pi.root / nm).read_text() and pi.mode(nm) == 0o600
    assert not (pi.boot / "swarm-enroll/wifi").exists()
    assert (pi.root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"
    keys = pi.root / "home/pi/.ssh/authorized_keys"
    assert keys.read_text() == SSH_KEY + "\n" and pi.mode("home/pi/.ssh/authorized_keys") == 0o600
    if os.geteuid() == 0:
        assert keys.stat().st_uid == 1000
    # the second stage, enabled
    assert pi.mode("usr/local/lib/swarm-enroll/firstboot.sh") == 0o755
    link = pi.root / "etc/systemd/system/multi-user.target.wants/swarm-enroll-firstboot.service"
    assert os.readlink(link) == "/etc/systemd/system/swarm-enroll-firstboot.service"
    assert (pi.root / "etc/systemd/system/swarm-enroll-firstboot.service").is_file()
    # the hook is gone from cmdline.txt, everything else stays, on one line
    assert (pi.boot / "cmdline.txt").read_text() == \
        BOOKWORM_CMDLINE.rstrip("\n") + " cfg80211.ieee80211_regdom=GB\n"
    assert not any(a in (pi.boot / "cmdline.txt").read_text() for a in HOOK_ARGS)
    # it said what it did, in the journal and on the card
    assert "moved agent.toml to /etc/swarm-enroll/agent.toml" in pi.journal()
    assert "hostname set to PiLike-09" in (pi.boot / "swarm-enroll/firstboot.log").read_text()
    assert_no_secret_exposed(pi)


def test_install_stage(flash: Flash, pi: Pi, wheel: Path, secrets_dir: Path) -> None:
    flash_card(flash, pi, wheel, secrets_dir)
    pi.prepare()
    pi.install()
    calls = pi.calls()
    venv = f"{pi.root}/opt/swarm-enroll"
    wheel_on_pi = f"{pi.root}/var/lib/swarm-enroll-firstboot/payload/dist/{wheel.name}"
    expected = [
        "apt-get -q -o DPkg::Lock::Timeout=600 update",
        "apt-get -q -y -o DPkg::Lock::Timeout=600 install docker.io python3-venv",
        "systemctl enable --now docker.service",
        f"python3 -m venv {venv}",
        f"pip install --no-input --disable-pip-version-check {wheel_on_pi}[controller]",
        "systemctl daemon-reload",
        "systemctl enable --now enroll-agent.service",
        "systemctl enable --now enroll-agent-check.timer enroll-controller-ensure.timer",
        "systemctl disable swarm-enroll-firstboot.service",
    ]
    positions = [calls.index(c) for c in expected]
    assert positions == sorted(positions), calls
    assert not any("enable --now enroll-controller" in c or "swarm init" in c for c in calls)
    assert not any(c.startswith("enroll-agent announce") for c in calls)  # no avahi here
    unit = pi.root / "etc/systemd/system/enroll-agent.service"
    assert "ExecStart=/opt/swarm-enroll/bin/enroll-agent run --config " \
        "/etc/swarm-enroll/agent.toml" in unit.read_text()
    assert not (pi.root / "etc/systemd/system/enroll-agent.service.d").exists()  # systemd 252
    assert (pi.root / "var/lib/swarm-enroll-firstboot/done").exists()
    assert not (pi.root / "var/lib/swarm-enroll-firstboot/payload/dist").exists()
    assert "done: enroll-agent is running" in pi.journal()
    # the admin reads the key's fingerprint off the card before approving the Pi
    assert "agent key fingerprint: 3f2a-9c41-07be-d5e0-1b6c" in \
        (pi.boot / "swarm-enroll/firstboot.log").read_text()
    # a worker is ready to become a manager: the controller installed, not started (its
    # ensure timer starts it once the Pi is a manager); the check-in's timer and service
    assert (pi.root / "etc/systemd/system/enroll-controller.service").exists()
    for unit in ("enroll-agent-check.timer", "enroll-agent-check.service",
                 "enroll-controller-ensure.timer", "enroll-controller-ensure.service"):
        shipped = Path(__file__).resolve().parents[4] / "deploy/systemd" / unit
        assert (pi.root / "etc/systemd/system" / unit).read_text() == shipped.read_text()
    assert not (pi.root / "etc/systemd/system/enroll-agent-check.service.d").exists()
    assert f"pip install --no-input --disable-pip-version-check {wheel_on_pi}[controller]" in \
        calls
    assert_no_secret_exposed(pi)

    # finished: running it again does nothing
    before = len(pi.calls())
    pi.install()
    assert len(pi.calls()) == before


def test_avahi_announces_the_pi_where_it_is_present(flash: Flash, pi: Pi, wheel: Path,
                                                     secrets_dir: Path) -> None:
    flash_card(flash, pi, wheel, secrets_dir, wifi=False)
    (pi.root / "etc/avahi/services").mkdir(parents=True)  # Raspberry Pi OS has avahi-daemon
    pi.prepare()
    pi.install()
    calls = pi.calls()
    announce = f"enroll-agent announce --config {pi.root}/etc/swarm-enroll/agent.toml"
    assert calls.index(announce) < calls.index("systemctl enable --now enroll-agent.service")
    assert "avahi announces this Pi (/etc/avahi/services/swarm-node.service)" in pi.journal()
    assert (pi.root / "var/lib/swarm-enroll-firstboot/done").exists()


def test_image_with_the_packages_needs_no_apt(flash: Flash, pi: Pi, wheel: Path,
                                              secrets_dir: Path) -> None:
    """Docker and python3-venv already on the image: apt (and its network) is not used."""
    flash_card(flash, pi, wheel, secrets_dir, wifi=False)
    dpkg = pi.root / "var/lib/dpkg"
    dpkg.mkdir(parents=True)
    (dpkg / "status").write_text(
        "Package: python3-venv\nStatus: install ok installed\nMaintainer: x\n"
        "Version: 3.11.2-1+b1\nArchitecture: amd64\nDescription: venv\n\n")
    (pi.root / "usr/sbin").mkdir(parents=True)
    (pi.root / "usr/sbin/dockerd").write_text("#!/bin/sh\n")
    (pi.root / "usr/sbin/dockerd").chmod(0o755)
    pi.prepare()
    pi.install()
    assert not any(c.startswith("apt-get") for c in pi.calls()), pi.calls()
    assert "Docker and python3-venv are installed already" in pi.journal()
    assert (pi.root / "var/lib/swarm-enroll-firstboot/done").exists()


def test_backoff_drop_in_only_where_systemd_knows_it(flash: Flash, pi: Pi, wheel: Path,
                                                     secrets_dir: Path) -> None:
    flash_card(flash, pi, wheel, secrets_dir, wifi=False)
    pi.prepare()
    pi.install(systemd=256)
    drop_in = pi.root / "etc/systemd/system/enroll-agent.service.d/restart-backoff.conf"
    assert "RestartSteps=" in drop_in.read_text()


def test_power_cut_half_way_carries_on(flash: Flash, pi: Pi, wheel: Path,
                                       secrets_dir: Path) -> None:
    flash_card(flash, pi, wheel, secrets_dir)
    pi.prepare()
    pi.prepare()  # the first stage again (power lost before the reboot): still fine
    assert (pi.root / "etc/swarm-enroll/agent.toml").stat().st_size > 0
    assert "already" in pi.journal()

    (pi.test_dir / "fail-apt").touch()  # no network yet
    assert "apt-get update failed" in pi.install(expect=1).stderr + pi.journal()
    (pi.test_dir / "fail-pip").touch()  # the index went away during pip install
    pi.install(expect=1)
    assert not (pi.root / "var/lib/swarm-enroll-firstboot/done").exists()
    pi.install()  # the next try (systemd retries every minute, and on every boot)
    calls = pi.calls()
    assert calls.count("apt-get -q -o DPkg::Lock::Timeout=600 update") == 2  # failed, ok
    assert calls.count("apt-get -q -y -o DPkg::Lock::Timeout=600 install docker.io "
                       "python3-venv") == 1  # and not again once done
    assert sum(c.startswith("python3 -m venv") for c in calls) == 2
    assert calls.count("systemctl enable --now enroll-agent.service") == 1
    assert (pi.root / "var/lib/swarm-enroll-firstboot/done").exists()


def test_controller_card(flash: Flash, pi: Pi, wheel: Path, secrets_dir: Path,
                         tmp_path: Path) -> None:
    state = tmp_path / "state"
    init = CliRunner().invoke(controller_main, [
        "init", "--no-swarm-init", "--state-dir", str(state), "--advertise-addr",
        "192.168.1.10", "--hostname", "PiLike-09", "--json"])
    assert init.exit_code == 0, init.output
    flash_card(flash, pi, wheel, secrets_dir, "--controller-state", state)
    pi.prepare()
    carried = pi.root / "var/lib/swarm-enroll"
    assert stat.S_IMODE(carried.stat().st_mode) == 0o700
    assert (carried / "ca-key.pem").read_bytes() == (state / "ca-key.pem").read_bytes()
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in carried.iterdir())
    assert not (pi.boot / "swarm-enroll/controller").exists()
    pi.install()
    calls = pi.calls()
    assert any(c.startswith("pip install") and c.endswith(f"{wheel.name}[controller]")
               for c in calls), calls
    order = [calls.index("docker swarm init --advertise-addr 192.168.1.10"),
             calls.index("systemctl enable --now enroll-controller.service"),
             calls.index("systemctl enable --now enroll-agent.service")]
    assert order == sorted(order)
    assert (pi.root / "etc/systemd/system/enroll-controller.service").is_file()
    secrets = [(carried / "ca-key.pem").read_text().splitlines()[1]]
    for path in pi.boot.rglob("*"):
        assert not (path.is_file() and secrets[0].encode() in path.read_bytes()), path
    assert_no_secret_exposed(pi)
    assert json.loads(init.output)["admin_token"] not in "\n".join(calls)


def test_cloud_init_prepare(flash: Flash, pi: Pi, wheel: Path, secrets_dir: Path) -> None:
    (pi.boot / "user-data").write_text(IMAGER_USER_DATA)
    (pi.boot / "meta-data").write_text("instance-id: rpi-imager-1\n")
    flash_card(flash, pi, wheel, secrets_dir)
    cmdline = (pi.boot / "cmdline.txt").read_text()
    pi.run(pi.boot / "swarm-enroll/firstboot.sh", "prepare")  # as cloud-init's runcmd does
    assert (pi.root / "etc/swarm-enroll/agent.toml").is_file()
    assert (pi.root / "etc/hostname").read_text() == "raspberrypi\n"  # cloud-init's job
    calls = pi.calls()
    assert calls[-2:] == ["systemctl daemon-reload",
                          "systemctl start --no-block swarm-enroll-firstboot.service"]
    assert (pi.boot / "cmdline.txt").read_text() == cmdline
    # network-config (with the Wi-Fi key) stays for cloud-init: the partition goes root-only
    assert PSK in (pi.boot / "network-config").read_text()
    boot_line = (pi.root / "etc/fstab").read_text().splitlines()[1].split()
    assert boot_line[:4] == ["PARTUUID=4e639091-01", "/boot/firmware", "vfat",
                             "defaults,fmask=0077,dmask=0077"]
    assert pi.mode("etc/fstab") == 0o644
    assert (pi.root / "etc/fstab").read_text().splitlines()[2] == FSTAB.splitlines()[2]
    pi.run(pi.boot / "swarm-enroll/firstboot.sh", "prepare")
    assert (pi.root / "etc/fstab").read_text().count("fmask") == 1


def test_another_first_run_script_runs_first_and_once(flash: Flash, pi: Pi, wheel: Path,
                                                      secrets_dir: Path) -> None:
    (pi.boot / "firstrun.sh").write_text(
        '#!/bin/bash\necho "ran ${BASH_VERSION:+in bash}" >>"$SE_TEST_DIR/imager"\n')
    (pi.boot / "cmdline.txt").write_text(
        BOOKWORM_CMDLINE.rstrip("\n") + " systemd.run=/boot/firstrun.sh "
        "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n")
    flash_card(flash, pi, wheel, secrets_dir, wifi=False)
    pi.prepare()
    pi.prepare()
    assert (pi.test_dir / "imager").read_text() == "ran in bash\n"
    assert not (pi.boot / "firstrun.sh").exists()  # it held Imager's secrets
    assert (pi.boot / "cmdline.txt").read_text() == BOOKWORM_CMDLINE


def test_script_is_valid_posix_sh() -> None:
    script = Path(__file__).resolve().parents[4] / "deploy/firstboot/firstboot.sh"
    for shell in ("sh", "bash"):
        result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
