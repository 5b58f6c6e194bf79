"""The controller's config file (`controller.toml` in its state dir) and state layout."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.responder import MDNS_VIA
from agent.wire.adoption import SECRET_FILE

DEFAULT_STATE_DIR = Path("/var/lib/swarm-enroll")
DEFAULT_PORT = 8443
DEFAULT_VIZ_SOCKET_DIR = "/run/swarm-enroll/docker-ro"
VIZ_SOCKET_NAME = "docker.sock"  # the visualizer dials /var/run/docker.sock
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL


@dataclass(frozen=True)
class Limits:
    """What unapproved peers can make the controller store."""

    max_pending: int = 1000  # requests waiting for an admin, in all
    max_pending_per_source: int = 32  # of them from one address
    max_claims_per_hostname: int = 8  # waiting claims of one name


class ConfigError(ValueError):
    """The config file is wrong; the message names the key and what to write."""


@dataclass(frozen=True)
class ControllerConfig:
    state_dir: Path
    advertise_addr: str
    hostname: str
    listen: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    docker_host: str = "unix:///var/run/docker.sock"
    rules: str = "rules.toml"
    grant_ttl_minutes: int = 10
    stale_after_minutes: int = 30
    mdns: bool = True
    mdns_interfaces: list[str] = field(default_factory=list)
    mdns_via: str = "auto"  # avahi-daemon where it runs, else zeroconf; or force one
    avahi_services_dir: str = "/etc/avahi/services"
    avahi_run_dir: str = "/run/avahi-daemon"
    log_file: str = ""
    baseline: str = "baseline.yml"
    viz_socket_dir: str = DEFAULT_VIZ_SOCKET_DIR  # "": no filtered Docker API for viz
    # What unapproved peers can make the controller store (see README: Security).
    max_pending: int = 1000
    max_pending_per_source: int = 32
    max_claims_per_hostname: int = 8

    # Files in the state dir.
    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.state_dir / "ca-key.pem"

    @property
    def tls_cert(self) -> Path:
        return self.state_dir / "tls.pem"

    @property
    def tls_key(self) -> Path:
        return self.state_dir / "tls-key.pem"

    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def adoption_secret(self) -> Path:
        return self.state_dir / SECRET_FILE

    @property
    def limits(self) -> Limits:
        return Limits(self.max_pending, self.max_pending_per_source,
                      self.max_claims_per_hostname)

    @property
    def rules_path(self) -> Path:
        return self.state_dir / self.rules

    @property
    def baseline_path(self) -> Path:
        return self.state_dir / self.baseline

    @property
    def url(self) -> str:
        host = f"[{self.advertise_addr}]" if ":" in self.advertise_addr else self.advertise_addr
        return f"https://{host}:{self.port}"

    def to_toml(self) -> str:
        lines = ["# swarm-enroll controller configuration (see README: Configuration)"]
        for key in _TYPES:
            value = getattr(self, key)
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, int):
                rendered = str(value)
            elif isinstance(value, list):
                rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                rendered = f'"{value}"'
            lines.append(f"{key} = {rendered}")
        return "\n".join(lines) + "\n"


_TYPES: dict[str, type] = {
    "advertise_addr": str, "hostname": str, "listen": str, "port": int, "docker_host": str,
    "rules": str, "grant_ttl_minutes": int, "stale_after_minutes": int, "mdns": bool,
    "mdns_interfaces": list, "mdns_via": str, "avahi_services_dir": str,
    "avahi_run_dir": str, "log_file": str, "baseline": str, "viz_socket_dir": str,
    "max_pending": int, "max_pending_per_source": int, "max_claims_per_hostname": int,
}


def parse_config(state_dir: Path, data: dict[str, Any]) -> ControllerConfig:
    unknown = set(data) - set(_TYPES)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}")
    for key, kind in _TYPES.items():
        if key in data and (not isinstance(data[key], kind) or
                            (kind is int and isinstance(data[key], bool))):
            raise ConfigError(f"{key} must be a {kind.__name__}")
    for key in ("advertise_addr", "hostname"):
        if not data.get(key):
            raise ConfigError(f"{key} is required")
    try:
        address = ipaddress.ip_address(data["advertise_addr"])
    except ValueError:
        raise ConfigError("advertise_addr must be an IP address") from None
    if address.is_unspecified or address.is_multicast:  # in the certificate, and for agents
        raise ConfigError(f"advertise_addr must be this manager's own address on the LAN, "
                          f"not {address}")
    if not 0 < data.get("port", DEFAULT_PORT) < 65536:
        raise ConfigError("port must be from 1 to 65535")
    if not 1 <= data.get("grant_ttl_minutes", 10) <= 1440:
        raise ConfigError("grant_ttl_minutes must be from 1 to 1440")
    if data.get("stale_after_minutes", 30) < 0:
        raise ConfigError("stale_after_minutes must be >= 0")
    for key in ("max_pending", "max_pending_per_source", "max_claims_per_hostname"):
        if not 1 <= data.get(key, 1) <= 1_000_000:
            raise ConfigError(f"{key} must be from 1 to 1000000")
    _check_viz_socket_dir(data.get("viz_socket_dir", DEFAULT_VIZ_SOCKET_DIR))
    if data.get("mdns_via", "auto") not in MDNS_VIA:
        raise ConfigError(f"mdns_via must be one of {', '.join(MDNS_VIA)} "
                          f"(not {data['mdns_via']!r})")
    for key in ("avahi_services_dir", "avahi_run_dir"):
        if key in data and not data[key].startswith("/"):
            raise ConfigError(f"{key} must be an absolute path")
    return ControllerConfig(state_dir=state_dir, **data)


def _check_viz_socket_dir(value: str) -> None:
    if not value:
        return
    if not value.startswith("/") or "\0" in value or ".." in Path(value).parts:
        raise ConfigError("viz_socket_dir must be an absolute path (or \"\" for none)")
    if len(str(Path(value) / VIZ_SOCKET_NAME).encode()) > _MAX_SOCKET_PATH:
        raise ConfigError(f"viz_socket_dir is too long for a unix socket path: at most "
                          f"{_MAX_SOCKET_PATH - len(VIZ_SOCKET_NAME) - 1} bytes")


def load_config(state_dir: Path) -> ControllerConfig:
    path = state_dir / "controller.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; run 'enroll-controller init' first") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(state_dir, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
