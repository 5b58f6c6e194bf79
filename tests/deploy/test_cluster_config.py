"""The lab's cluster file: the shipped one is valid, mistakes fail with one clear message."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.rules import QuorumSettings, quorum_settings
from deploy.lab.cli import main
from deploy.lab.config import ConfigError, load_cluster

LAB_DIR = Path(__file__).resolve().parents[2] / "deploy" / "lab"

PI = '''
[[pi]]
name = "{name}"
model = "Raspberry Pi 3 Model B Rev 1.2"
arch = "armv7l"
hardware_id = "{hwid}"
'''


def write(tmp_path: Path, text: str, rules: bool = True) -> Path:
    if rules:
        (tmp_path / "rules.toml").write_text('[[rule]]\nmatch = "*"\nrole = "worker"\n')
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def pis(*names: str) -> str:
    return "".join(PI.format(name=n, hwid=f"00000000{i:08x}") for i, n in enumerate(names))


def test_shipped_cluster_file() -> None:
    cfg = load_cluster(LAB_DIR / "cluster.toml")
    assert [p.name for p in cfg.pis] == [f"PiLike-0{i}" for i in range(1, 9)]
    assert cfg.controller == "PiLike-01"
    assert cfg.rules == LAB_DIR / "rules.toml"
    assert cfg.subnet == ipaddress.IPv4Network("198.18.0.0/24")
    assert cfg.admin_ip == ipaddress.IPv4Address("198.18.0.254")
    assert [str(p.ip) for p in cfg.pis] == [f"198.18.0.{i}" for i in range(11, 19)]
    zero_w = [p.name for p in cfg.pis if p.arch == "armv6l"]
    assert zero_w == ["PiLike-01", "PiLike-02"]
    assert all(p.model.startswith("Raspberry Pi 3") for p in cfg.pis[2:])
    assert all(p.token for p in cfg.pis)
    assert len({p.hardware_id for p in cfg.pis}) == 8


def test_shipped_rules_file() -> None:
    rules = tomllib.loads((LAB_DIR / "rules.toml").read_text())["rule"]
    assert [(r["match"], r["role"], r["approve"]) for r in rules] == [
        ("PiLike-0[12]", "manager", "manual"), ("PiLike-*", "worker", "token")]
    assert rules[0]["labels"] == {"pi.model": "zero-w"}
    assert rules[1]["labels"] == {"pi.model": "3b"}
    # the demo's third manager: a Pi 3 that the quorum keeper promotes
    assert quorum_settings((LAB_DIR / "rules.toml").read_text()) == QuorumSettings(
        3, "PiLike-0[3-8]", 120)


def test_explicit_ip_and_token(tmp_path: Path) -> None:
    text = pis("a1", "b2") + 'ip = "198.18.0.99"\ntoken = false\n'
    cfg = load_cluster(write(tmp_path, text))
    assert [str(p.ip) for p in cfg.pis] == ["198.18.0.11", "198.18.0.99"]
    assert [p.token for p in cfg.pis] == [True, False]
    assert cfg.controller is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[lab]\nsubnett = '198.18.0.0/24'\n" + pis("a"), r"\[lab\]: unknown key\(s\): subnett"),
        ("[labs]\n" + pis("a"), r"unknown top-level key\(s\): labs"),
        (pis("a") + 'colour = "red"\n', r"\[\[pi\]\] #1 \(a\): unknown key\(s\): colour"),
        (pis("PiLike-01", "pilike-01"), r"duplicate name 'pilike-01'"),
        (pis("Pi_Like"), r"name 'Pi_Like' is not a valid hostname"),
        (pis("-pi"), r"not a valid hostname"),
        (pis("pi." + "x"), r"not a valid hostname"),
        (pis("p" * 51), r"not a valid hostname"),
        (pis("lan"), r"reserved"),
        (pis("a") + 'ip = "198.18.1.5"\n', r"ip 198.18.1.5 is outside the lab subnet"),
        (pis("a") + 'ip = "198.18.0.255"\n', r"outside the lab subnet .*broadcast"),
        (pis("a") + 'ip = "198.18.0.254"\n', r"reserved for the host's admin veth"),
        (pis("a") + 'ip = "10.0.0.1"\n', r"outside the lab subnet"),
        (pis("a", "b") + 'ip = "198.18.0.11"\n', r"ip 198.18.0.11 already used by a"),
        ("[lab]\nsubnet = '192.168.1.0/24'\n" + pis("a"), r"must lie inside 198.18.0.0/15"),
        ("[lab]\nsubnet = '198.18.0.1/24'\n" + pis("a"), r"is not an IPv4 network"),
        ("[lab]\nsubnet = '198.18.0.0/30'\n" + pis("a"), r"too small"),
        ("[lab]\ncontroller = 'zz'\nrules = 'rules.toml'\n" + pis("a"), r"controller 'zz'"),
        ("[lab]\ncontroller = 'a'\n" + pis("a"), r"rules is required"),
        ("[lab]\ncontroller = 'a'\nrules = 'nope.toml'\n" + pis("a"), r"does not exist"),
        ("[lab]\n", r"no \[\[pi\]\] entries"),
        ('[[pi]]\nname = "a"\n', r"missing key\(s\): model, arch, hardware_id"),
        (pis("a") + "token = 'yes'\n", r"token must be true or false"),
        (pis("a").replace("armv7l", "mips"), r"arch 'mips'"),
        (PI.format(name="a", hwid="cafe") + PI.format(name="b", hwid="cafe"),
         r"\[\[pi\]\] b: hardware_id 'cafe' already used by a"),
        (pis("a").replace('"00000000', '"bad id'), r"hardware_id"),
        ("[[pi]\n", r"not valid TOML"),
    ],
)
def test_invalid_cluster_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_cluster(write(tmp_path, text))
    assert str(tmp_path / "cluster.toml") in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster(tmp_path / "nope.toml")


def test_cli_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, pis("Bad_Name"))
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path / "state"), "up",
                                       "--config", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enroll-lab: error: ")
    assert "Bad_Name" in lines[0] and "Traceback" not in result.output


def test_card_pi_needs_only_a_name_and_a_card(tmp_path: Path) -> None:
    (tmp_path / "cards" / "w1").mkdir(parents=True)
    text = pis("PiLike-01") + '\n[[pi]]\nname = "PiCard-W1"\ncard = "cards/w1"\n'
    cfg = load_cluster(write(tmp_path, '[lab]\nrules = "rules.toml"\ncontroller = "PiLike-01"\n'
                             + text))
    card_pi = cfg.pi("PiCard-W1")
    assert card_pi.card == tmp_path / "cards" / "w1"
    assert cfg.pi("PiLike-01").card is None
    assert len(card_pi.hardware_id) == 32 and card_pi.arch in ("x86_64", "aarch64", "armv7l")
    again = load_cluster(tmp_path / "cluster.toml").pi("PiCard-W1")
    assert again.hardware_id == card_pi.hardware_id  # derived from the name: stable


@pytest.mark.parametrize(("extra", "message"), [
    ('card = "nowhere"\n', r"card .*nowhere is not a directory"),
    ('card = 3\n', r"card must be the path"),
    ('card = "cards/w1"\nhardware_id = "00000000a1b2c3d4"\n',
     r"a card Pi's hardware_id is its machine id"),
])
def test_invalid_card_pis(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "cards" / "w1").mkdir(parents=True)
    with pytest.raises(ConfigError, match=message):
        load_cluster(write(tmp_path, '[[pi]]\nname = "PiCard-W1"\n' + extra))


def test_the_lab_controller_cannot_be_a_card_pi(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    with pytest.raises(ConfigError, match="boots a card"):
        load_cluster(write(tmp_path, '[lab]\nrules = "rules.toml"\ncontroller = "C1"\n'
                                     '[[pi]]\nname = "C1"\ncard = "c"\n'))
