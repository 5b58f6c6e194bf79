"""The controller config file: required keys, types, ranges, and its own TOML rendering."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, load_config, parse_config

BASE = {"advertise_addr": "10.0.0.1", "hostname": "ctl-1"}


def test_defaults(tmp_path: Path) -> None:
    config = parse_config(tmp_path, dict(BASE))
    assert (config.port, config.grant_ttl_minutes, config.rules) == (8443, 10, "rules.toml")
    assert config.database == tmp_path / "state.db"
    assert config.url == "https://10.0.0.1:8443"


def test_viz_socket_dir(tmp_path: Path) -> None:
    assert parse_config(tmp_path, dict(BASE)).viz_socket_dir == "/run/swarm-enroll/docker-ro"
    assert parse_config(tmp_path, {**BASE, "viz_socket_dir": ""}).viz_socket_dir == ""  # none
    longest = "/run/" + "d" * 90  # with "/docker.sock", 107 bytes: what sun_path holds
    assert parse_config(tmp_path, {**BASE, "viz_socket_dir": longest}).viz_socket_dir == longest


def test_ipv6_url(tmp_path: Path) -> None:
    assert parse_config(tmp_path, {**BASE, "advertise_addr": "fd00::1"}).url == \
        "https://[fd00::1]:8443"


@pytest.mark.parametrize(("data", "word"), [
    ({**BASE, "prot": 1}, "prot"),
    ({"hostname": "ctl-1"}, "advertise_addr"),
    ({"advertise_addr": "10.0.0.1"}, "hostname"),
    ({**BASE, "advertise_addr": "ctl.local"}, "advertise_addr"),
    ({**BASE, "port": 0}, "port"),
    ({**BASE, "port": 65536}, "port"),
    ({**BASE, "port": "8443"}, "port"),
    ({**BASE, "port": True}, "port"),
    ({**BASE, "mdns": "yes"}, "mdns"),
    ({**BASE, "grant_ttl_minutes": 0}, "grant_ttl_minutes"),
    ({**BASE, "grant_ttl_minutes": 1441}, "grant_ttl_minutes"),
    ({**BASE, "viz_socket_dir": "run/docker-ro"}, "viz_socket_dir"),
    ({**BASE, "viz_socket_dir": "/run/../var/run"}, "viz_socket_dir"),
    ({**BASE, "viz_socket_dir": "/run/" + "d" * 91}, "viz_socket_dir"),  # sun_path is short
    ({**BASE, "viz_socket_dir": 1}, "viz_socket_dir"),
    ({**BASE, "mdns_via": "bonjour"}, "mdns_via must be one of auto, avahi, zeroconf"),
    ({**BASE, "mdns_via": 1}, "mdns_via"),
    ({**BASE, "avahi_services_dir": "services"}, "avahi_services_dir must be an absolute"),
    ({**BASE, "avahi_run_dir": "run"}, "avahi_run_dir must be an absolute"),
    ({**BASE, "advertise_addr": "0.0.0.0"}, "advertise_addr must be this manager's own"),
    ({**BASE, "advertise_addr": "224.0.0.251"}, "advertise_addr must be this manager's own"),
])
def test_errors_name_the_key(tmp_path: Path, data: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(tmp_path, data)
    assert word in str(err.value)


def test_a_hostname_of_before_still_loads(tmp_path: Path) -> None:
    """init checks a new hostname now; an existing controller.toml must still serve."""
    assert parse_config(tmp_path, {**BASE, "hostname": "mgr_1"}).hostname == "mgr_1"


def test_to_toml_round_trip(tmp_path: Path) -> None:
    config = parse_config(tmp_path, {**BASE, "port": 9443, "mdns": False,
                                     "mdns_interfaces": ["eth0"], "grant_ttl_minutes": 5,
                                     "mdns_via": "avahi", "avahi_services_dir": "/srv/s"})
    (tmp_path / "controller.toml").write_text(config.to_toml())
    assert tomllib.loads(config.to_toml())["port"] == 9443
    assert load_config(tmp_path) == config


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init"):
        load_config(tmp_path)
