"""The agent's config file, `/etc/swarm-enroll/agent.toml` (0600: it may hold a token)."""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agent.responder import MDNS_VIA
from agent.wire.errors import WireError
from agent.wire.keys import check_pin_format
from agent.wire.messages import validate_hardware_id, validate_hostname

DEFAULT_CONFIG = Path("/etc/swarm-enroll/agent.toml")


class ConfigError(ValueError):
    """The agent config is wrong; the message names the key and what to write."""


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path = Path("/var/lib/swarm-enroll-agent")
    ca_pin: str = ""
    controller_url: str = ""
    bootstrap_token: str = ""
    hardware_id: str = ""
    hostname: str = ""
    docker_host: str = "unix:///var/run/docker.sock"
    advertise_addr: str = ""
    model: str = ""
    arch: str = ""
    insecure_tofu: bool = False
    mdns: bool = True
    # who announces and browses: avahi-daemon where it runs ("auto"), or always one
    mdns_via: str = "auto"
    avahi_services_dir: Path = Path("/etc/avahi/services")
    avahi_run_dir: Path = Path("/run/avahi-daemon")
    poll_max_seconds: float = 15.0
    idle_poll_seconds: float = 60.0
    log_level: str = "info"
    log_file: str = ""
    # On a controller's own Pi: its state dir, whose secret proves this agent local.
    controller_dir: Path = Path("/var/lib/swarm-enroll")
    # While this Pi is a manager, its controller runs: this systemd unit ("" for none), or
    # (where there is no systemd, as in the lab) this command as the agent's child.
    controller_unit: str = "enroll-controller.service"
    controller_command: tuple[str, ...] = ()
    controller_log: str = ""
    # `enroll-agent check` starts this unit when the Pi must enroll again ("" for none)
    agent_unit: str = "enroll-agent.service"

    def __repr__(self) -> str:  # the token must not end up in a log line via repr
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if shown["bootstrap_token"]:
            shown["bootstrap_token"] = "<set>"
        return f"AgentConfig({shown})"


def parse_config(data: dict[str, Any]) -> AgentConfig:
    known = {f.name: f for f in fields(AgentConfig)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(AgentConfig, key)
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, Path):
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a path string")
            value = Path(value)
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key} must be a list of strings")
            value = tuple(value)
        elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{key} must be a {kind.__name__}")
        values[key] = value
    config = AgentConfig(**values)
    try:
        if config.ca_pin:
            values["ca_pin"] = check_pin_format(config.ca_pin)
        if config.hardware_id:
            validate_hardware_id(config.hardware_id)
        if config.hostname:
            validate_hostname(config.hostname)
    except WireError as exc:
        raise ConfigError(exc.message) from None
    if config.advertise_addr:
        try:
            ipaddress.ip_address(config.advertise_addr)
        except ValueError:
            raise ConfigError("advertise_addr must be an IP address") from None
    if config.mdns_via not in MDNS_VIA:
        raise ConfigError(f"mdns_via must be one of {', '.join(MDNS_VIA)} "
                          f"(not {config.mdns_via!r})")
    for key in ("avahi_services_dir", "avahi_run_dir"):
        if not getattr(config, key).is_absolute():
            raise ConfigError(f"{key} must be an absolute path")
    if config.controller_url and not config.controller_url.startswith("https://"):
        raise ConfigError("controller_url must start with https://")
    if not config.ca_pin and not config.insecure_tofu:
        raise ConfigError(
            "ca_pin is missing: copy the pin printed by 'enroll-controller init' into ca_pin "
            "(or, in a lab only, set insecure_tofu = true to trust the first controller found)"
        )
    return AgentConfig(**values)


def load_config(path: Path) -> AgentConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except PermissionError:
        raise ConfigError(f"{path} is not readable (run the agent as root)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def local_hostname(config: AgentConfig) -> str:
    return config.hostname or socket.gethostname()
