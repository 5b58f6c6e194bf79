"""The lab's cluster file: which simulated Pis exist, their addresses and identities.

Parsed with stdlib tomllib and validated up front, so that a typo fails with one clear
message before any namespace or daemon is created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import platform
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Addresses the lab may use: RFC 2544's benchmarking range, which no real network routes.
# A subnet outside it could shadow the host's real network through the host veth.
LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_SUBNET = "198.18.0.0/24"
FIRST_HOST = 11  # default addresses: .11, .12, ... in file order
KNOWN_ARCHES = frozenset({"armv6l", "armv7l", "aarch64", "x86_64"})
RESERVED_NAMES = frozenset({"lan"})  # "<prefix>lan" is the bridge's namespace
MAX_NAME = 50  # keeps the daemon's unix socket paths well under the 108-byte limit

_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_HWID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_LAB_KEYS = {"subnet", "rules", "controller", "images", "baseline"}
_PI_KEYS = {"name", "model", "arch", "hardware_id", "ip", "token", "card"}
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
CARD_MODEL = "Generic {arch} board"  # what a card Pi's agent reports (no device tree)


class ConfigError(ValueError):
    """The cluster file is unreadable or invalid; the message says what to fix."""


@dataclass(frozen=True)
class PiSpec:
    """One simulated Pi as the cluster file describes it."""

    name: str
    model: str
    arch: str
    hardware_id: str
    ip: ipaddress.IPv4Address
    token: bool = True  # write a bootstrap token into its agent config
    card: Path | None = None  # boots this card (enrollctl flash) instead of a lab agent


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster file."""

    path: Path | None
    subnet: ipaddress.IPv4Network
    rules: Path | None
    controller: str | None
    pis: tuple[PiSpec, ...]
    images: tuple[str, ...] = ()
    baseline: Path | None = None

    @property
    def admin_ip(self) -> ipaddress.IPv4Address:
        """The host's own address on the lab LAN (the root-namespace end of the admin veth)."""
        return self.subnet.broadcast_address - 1

    def pi(self, name: str) -> PiSpec:
        """The Pi called `name` (case-insensitive, like hostnames)."""
        for spec in self.pis:
            if spec.name.lower() == name.lower():
                return spec
        raise KeyError(name)


def valid_hostname(name: object) -> bool:
    """True for one RFC 1123 label short enough for the lab's paths."""
    return isinstance(name, str) and len(name) <= MAX_NAME and bool(_LABEL.match(name))


def valid_hardware_id(value: object) -> bool:
    """1-64 characters of letters, digits, '.', '_', ':' or '-' (starting alphanumeric)."""
    return isinstance(value, str) and bool(_HWID.match(value))


def valid_machine_id(value: object) -> bool:
    """A card Pi's hardware id is its /etc/machine-id: 32 lowercase hex digits."""
    return isinstance(value, str) and bool(_MACHINE_ID.match(value))


def host_arch() -> str:
    """The architecture a card Pi reports: the host's own (the container runs on it)."""
    arch = platform.machine()
    return arch if arch in KNOWN_ARCHES else "x86_64"


def load_cluster(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster file; relative paths in it are relative to the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_cluster(data, base_dir=path.resolve().parent, source=path)


def parse_cluster(
    data: dict[str, Any], base_dir: Path, source: Path | None = None
) -> ClusterConfig:
    """Validate parsed TOML; raise ConfigError naming the file and the offending entry."""
    where = str(source) if source else "cluster file"

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}")

    unknown = set(data) - {"lab", "pi"}
    if unknown:
        raise fail(f"unknown top-level key(s): {', '.join(sorted(unknown))} (allowed: lab, pi)")
    lab = data.get("lab", {})
    if not isinstance(lab, dict):
        raise fail("[lab] must be a table")
    unknown = set(lab) - _LAB_KEYS
    if unknown:
        raise fail(f"[lab]: unknown key(s): {', '.join(sorted(unknown))} "
                   f"(allowed: {', '.join(sorted(_LAB_KEYS))})")

    subnet_s = lab.get("subnet", DEFAULT_SUBNET)
    try:
        subnet = ipaddress.IPv4Network(subnet_s, strict=True)
    except (ValueError, TypeError) as exc:
        raise fail(f"[lab] subnet {subnet_s!r} is not an IPv4 network: {exc}") from None
    if not subnet.subnet_of(LAB_RANGE):
        raise fail(f"[lab] subnet {subnet} must lie inside {LAB_RANGE} (the lab never "
                   "uses addresses a real network could route)")
    if subnet.num_addresses < 16:
        raise fail(f"[lab] subnet {subnet} is too small (need at least a /28)")

    pis_raw = data.get("pi", [])
    if not isinstance(pis_raw, list) or not pis_raw:
        raise fail("no [[pi]] entries: the lab needs at least one Pi")

    admin_ip = subnet.broadcast_address - 1
    pis: list[PiSpec] = []
    names: dict[str, int] = {}
    ips: dict[ipaddress.IPv4Address, str] = {}
    hwids: dict[str, str] = {}
    for i, raw in enumerate(pis_raw, start=1):
        pis.append(_parse_pi(raw, i, subnet, admin_ip, base_dir, fail))
        spec = pis[-1]
        key = spec.name.lower()
        if key in names:
            raise fail(f"[[pi]] #{i}: duplicate name {spec.name!r} (also entry #{names[key]}; "
                       "hostnames are case-insensitive)")
        names[key] = i
        if spec.ip in ips:
            raise fail(f"[[pi]] {spec.name}: ip {spec.ip} already used by {ips[spec.ip]}")
        ips[spec.ip] = spec.name
        if spec.hardware_id in hwids:
            raise fail(f"[[pi]] {spec.name}: hardware_id {spec.hardware_id!r} already used "
                       f"by {hwids[spec.hardware_id]}")
        hwids[spec.hardware_id] = spec.name

    controller = lab.get("controller")
    if controller is not None:
        if not isinstance(controller, str) or controller.lower() not in names:
            raise fail(f"[lab] controller {controller!r} is not the name of a [[pi]]")
        controller = pis[names[controller.lower()] - 1].name
        if pis[names[controller.lower()] - 1].card is not None:
            raise fail(f"[lab] controller {controller!r} boots a card: a controller card "
                       "runs its own enroll-controller; leave [lab] controller out")

    rules = _opt_path(lab, "rules", base_dir, fail)
    if controller is not None and rules is None:
        raise fail("[lab] rules is required when a controller is set")
    if rules is not None and not rules.is_file():
        raise fail(f"[lab] rules file {rules} does not exist")
    baseline = _opt_path(lab, "baseline", base_dir, fail)

    images = lab.get("images", [])
    if not isinstance(images, list) or not all(isinstance(x, str) and x for x in images):
        raise fail("[lab] images must be a list of image names")

    return ClusterConfig(
        path=source.resolve() if source else None,
        subnet=subnet,
        rules=rules,
        controller=controller,
        pis=tuple(pis),
        images=tuple(images),
        baseline=baseline,
    )


def _opt_path(lab: dict[str, Any], key: str, base_dir: Path, fail: Any) -> Path | None:
    value = lab.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail(f"[lab] {key} must be a path")
    return (base_dir / value).resolve()


def _parse_pi(
    raw: object,
    index: int,
    subnet: ipaddress.IPv4Network,
    admin_ip: ipaddress.IPv4Address,
    base_dir: Path,
    fail: Any,
) -> PiSpec:
    if not isinstance(raw, dict):
        raise fail(f"[[pi]] #{index} must be a table")
    label = f"[[pi]] #{index}" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
    unknown = set(raw) - _PI_KEYS
    if unknown:
        raise fail(f"{label}: unknown key(s): {', '.join(sorted(unknown))} "
                   f"(allowed: {', '.join(sorted(_PI_KEYS))})")
    card = raw.get("card")
    if card is not None:
        if not isinstance(card, str) or not card:
            raise fail(f"{label}: card must be the path of a flashed boot partition")
        card = (base_dir / card).resolve()
        if not card.is_dir():
            raise fail(f"{label}: card {card} is not a directory (a boot partition written "
                       "by 'enrollctl flash')")
        raw = _card_defaults(raw)
    missing = [k for k in ("name", "model", "arch", "hardware_id") if k not in raw]
    if missing:
        raise fail(f"{label}: missing key(s): {', '.join(missing)}")

    name = raw["name"]
    if not valid_hostname(name):
        raise fail(f"{label}: name {name!r} is not a valid hostname (RFC 1123 label: letters, "
                   f"digits, inner hyphens, at most {MAX_NAME} characters here)")
    if name.lower() in RESERVED_NAMES:
        raise fail(f"{label}: name {name!r} is reserved by the lab")
    model = raw["model"]
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise fail(f"{label}: model must be a non-empty string")
    arch = raw["arch"]
    if arch not in KNOWN_ARCHES:
        raise fail(f"{label}: arch {arch!r} is not one of {', '.join(sorted(KNOWN_ARCHES))}")
    hwid = raw["hardware_id"]
    if not valid_hardware_id(hwid):
        raise fail(f"{label}: hardware_id {hwid!r} must be 1-64 characters of letters, "
                   "digits, '.', '_', ':' or '-'")
    if card is not None and not valid_machine_id(hwid):
        raise fail(f"{label}: a card Pi's hardware_id is its machine id: 32 lowercase hex "
                   f"digits, not {hwid!r}")
    token = raw.get("token", True)
    if not isinstance(token, bool):
        raise fail(f"{label}: token must be true or false")

    if "ip" in raw:
        try:
            ip = ipaddress.IPv4Address(raw["ip"])
        except (ValueError, TypeError):
            raise fail(f"{label}: ip {raw['ip']!r} is not an IPv4 address") from None
    else:
        ip = subnet.network_address + FIRST_HOST + index - 1
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        raise fail(f"{label}: ip {ip} is outside the lab subnet {subnet} "
                   "(or is its network/broadcast address)")
    if ip == admin_ip:
        raise fail(f"{label}: ip {ip} is reserved for the host's admin veth")
    return PiSpec(name=name, model=model, arch=arch, hardware_id=hwid, ip=ip, token=token,
                  card=card)


def _card_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A card Pi needs only a name and a card: it reports the host's architecture, and
    its machine id (its hardware id) is derived from its name unless given."""
    arch = host_arch()
    name = raw.get("name")
    derived = hashlib.sha256(str(name).lower().encode()).hexdigest()[:32]
    return {"arch": arch, "model": CARD_MODEL.format(arch=arch), "hardware_id": derived,
            **raw}
