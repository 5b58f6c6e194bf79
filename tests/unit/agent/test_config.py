"""The agent config file: a pin is required, keys and types are checked, the token is hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, ConfigError, load_config, parse_config

PIN = "sha256:" + "ab" * 32
TOKEN = "seb_" + "Q" * 43


def test_minimal_config() -> None:
    config = parse_config({"ca_pin": PIN})
    assert config.ca_pin == PIN and config.insecure_tofu is False
    assert config.state_dir == Path("/var/lib/swarm-enroll-agent")


def test_pin_is_normalised() -> None:
    assert parse_config({"ca_pin": " " + PIN.upper()}).ca_pin == PIN


def test_missing_pin_refused_with_clear_message() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"controller_url": "https://10.0.0.1:8443"})
    assert "ca_pin" in str(err.value)
    assert "insecure_tofu" in str(err.value)


def test_insecure_tofu_allows_missing_pin() -> None:
    assert parse_config({"insecure_tofu": True}).ca_pin == ""


def test_bad_pin_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"ca_pin": "sha256:1234"})
    assert "sha256" in str(err.value)


def test_unknown_key_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"ca_pin": PIN, "controler_url": "https://x"})
    assert "controler_url" in str(err.value)


@pytest.mark.parametrize(("key", "value"), [
    ("ca_pin", 5),
    ("insecure_tofu", "yes"),
    ("insecure_tofu", 1),
    ("mdns", "false"),
    ("poll_max_seconds", "15"),
    ("poll_max_seconds", True),
    ("state_dir", 5),
    ("bootstrap_token", ["seb_x"]),
    ("hostname", 3),
])
def test_wrong_types_named(key: str, value: Any) -> None:
    data: dict[str, Any] = {"ca_pin": PIN, key: value}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert key in str(err.value)


def test_int_accepted_for_float() -> None:
    assert parse_config({"ca_pin": PIN, "poll_max_seconds": 30}).poll_max_seconds == 30.0


@pytest.mark.parametrize(("key", "value"), [
    ("hostname", "bad_name"),
    ("hardware_id", "has space"),
    ("advertise_addr", "pi.local"),
    ("controller_url", "http://10.0.0.1:8443"),
])
def test_bad_values_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        parse_config({"ca_pin": PIN, key: value})


def test_repr_hides_bootstrap_token() -> None:
    config = parse_config({"ca_pin": PIN, "bootstrap_token": TOKEN})
    assert config.bootstrap_token == TOKEN
    for text in (repr(config), str(config), f"{config}", f"{config}", f"{config!r}"):
        assert TOKEN not in text
        assert "Q" * 20 not in text
    assert "bootstrap_token" in repr(config)


def test_repr_shows_other_settings() -> None:
    assert PIN in repr(AgentConfig(ca_pin=PIN))


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "agent.toml"
    with pytest.raises(ConfigError, match="not found"):
        load_config(missing)
    missing.write_text("ca_pin = \n")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(missing)
    missing.write_text("nope = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    assert str(missing) in str(err.value) and "nope" in str(err.value)


def test_load_config_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'ca_pin = "{PIN}"\nhostname = "PiLike-03"\npoll_max_seconds = 5\n')
    config = load_config(path)
    assert (config.hostname, config.poll_max_seconds) == ("PiLike-03", 5.0)


def test_mdns_via_and_avahi_dirs() -> None:
    config = parse_config({"ca_pin": PIN})
    assert config.mdns_via == "auto"
    assert config.avahi_services_dir == Path("/etc/avahi/services")
    assert config.avahi_run_dir == Path("/run/avahi-daemon")
    config = parse_config({"ca_pin": PIN, "mdns_via": "zeroconf",
                           "avahi_services_dir": "/tmp/s", "avahi_run_dir": "/tmp/r"})
    assert (config.mdns_via, config.avahi_services_dir) == ("zeroconf", Path("/tmp/s"))


@pytest.mark.parametrize(("data", "named"), [
    ({"mdns_via": "bonjour"}, "mdns_via must be one of auto, avahi, zeroconf"),
    ({"mdns_via": True}, "mdns_via must be a str"),
    ({"avahi_services_dir": "services"}, "avahi_services_dir must be an absolute path"),
    ({"avahi_run_dir": 3}, "avahi_run_dir must be a path"),
])
def test_bad_mdns_settings_named(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config({"ca_pin": PIN, **data})
