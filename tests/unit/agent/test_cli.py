"""`enroll-agent announce`: the Pi's avahi service file from its config and saved state."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main

PIN = "sha256:" + "ab" * 32


def _config(tmp_path: Path, services: Path) -> Path:
    conf = tmp_path / "agent.toml"
    conf.write_text(f'ca_pin = "{PIN}"\nstate_dir = "{tmp_path / "state"}"\n'
                    f'hardware_id = "00000000a1b2c309"\nhostname = "PiLike-09"\n'
                    f'arch = "armv6l"\navahi_services_dir = "{services}"\n')
    return conf


def _txt(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return dict(str(e.text).split("=", 1) for e in root.iter("txt-record"))


def test_announce_writes_the_node_service_file(tmp_path: Path) -> None:
    services = tmp_path / "services"
    services.mkdir()
    conf = _config(tmp_path, services)
    runner = CliRunner()
    result = runner.invoke(main, ["announce", "--config", str(conf)])
    assert result.exit_code == 0, result.output
    path = services / "swarm-node.service"
    assert result.output.strip() == str(path)
    agent_id = json.loads(runner.invoke(main, ["id", "--config", str(conf)]).output)["agent_id"]
    root = ET.parse(path).getroot()
    assert root.findtext("name") == "PiLike-09"
    assert root.findtext("service/type") == "_swarm-node._tcp"
    assert _txt(path) == {"v": "1", "hw": "00000000a1b2c309", "id": agent_id, "state": "new",
                          "role": "", "arch": "armv6l"}
    # the saved state is what it announces
    (tmp_path / "state" / "enrollment.json").write_text(
        json.dumps({"status": "joined", "role": "worker"}))
    assert runner.invoke(main, ["announce", "--config", str(conf)]).exit_code == 0
    assert (_txt(path)["state"], _txt(path)["role"]) == ("joined", "worker")


def test_announce_without_the_dir_is_one_clear_line(tmp_path: Path) -> None:
    conf = _config(tmp_path, tmp_path / "no-avahi")
    result = CliRunner().invoke(main, ["announce", "--config", str(conf)])
    assert result.exit_code == 1
    assert "cannot write" in result.output and "Traceback" not in result.output
