"""Message schemas: what each side may send, checked field by field.

Both sides validate with the same code, so a malformed message is refused with
the same words wherever it is caught. Limits are small on purpose: every field
comes from an unauthenticated LAN peer until its signature is checked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.wire.errors import WireError

MAX_BODY_BYTES = 16 * 1024
MAX_CONTROLLERS = 16  # controller URLs a grant carries
ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")

# \Z, not $: `$` also matches before a trailing newline. ASCII: no Unicode case folds.
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z", re.ASCII)
_HARDWARE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}\Z", re.ASCII)
_PRINTABLE = re.compile(r"^[\x20-\x7e]*\Z")
_NODE_ID = re.compile(r"^[a-z0-9]{25}\Z", re.ASCII)
_SWARM_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}\Z", re.ASCII)


def validate_hostname(value: Any) -> str:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    if not isinstance(value, str) or not value:
        raise WireError("bad_hostname", "hostname must be a non-empty string")
    if len(value) > 253:
        raise WireError("bad_hostname", "hostname is longer than 253 characters")
    for label in value.split("."):
        if not _LABEL.match(label):
            raise WireError(
                "bad_hostname",
                f"hostname {value[:64]!r} is not an RFC 1123 name: each dot-separated part "
                "is 1-63 ASCII letters, digits or inner hyphens",
            )
    return value


def validate_hardware_id(value: Any) -> str:
    if not isinstance(value, str) or not _HARDWARE_ID.match(value):
        raise WireError(
            "bad_hardware_id",
            "hardware_id must be 1-64 characters of letters, digits, ':', '.', '_' or '-'",
        )
    return value


def validate_node_id(value: Any) -> str:
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise WireError("bad_node_id", "node_id must be a 25-character Swarm node ID")
    return value


def _text(name: str, value: Any, limit: int, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise WireError(f"bad_{name}", f"{name} is required")
        return ""
    if not isinstance(value, str) or len(value) > limit or not _PRINTABLE.match(value):
        raise WireError(f"bad_{name}", f"{name} must be printable ASCII of at most {limit} chars")
    return value


def _addresses(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 16:
        raise WireError("bad_addresses", "addresses must be a list of at most 16 IP addresses")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_address(item)))
        except (ValueError, TypeError):
            raise WireError("bad_addresses", f"{str(item)[:64]!r} is not an IP address") from None
    return out


def validate_labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 32:
        raise WireError("bad_labels", "labels must be a table of at most 32 entries")
    for key, val in value.items():
        if not isinstance(key, str) or not _SWARM_LABEL_KEY.match(key):
            raise WireError("bad_labels", f"label key {str(key)[:64]!r} is not a valid label key")
        if not isinstance(val, str) or len(val) > 256 or not _PRINTABLE.match(val):
            raise WireError("bad_labels", f"label {key!r} must be printable text of <= 256 chars")
    return dict(value)


def validate_controller_urls(value: Any) -> list[str]:
    """Where the swarm's controllers serve (in grants and in every answer to an agent)."""
    if not isinstance(value, list) or len(value) > MAX_CONTROLLERS or not all(
            isinstance(u, str) and u.startswith("https://") and len(u) <= 300
            and _PRINTABLE.match(u) for u in value):
        raise WireError("bad_controllers", f"controllers must be at most {MAX_CONTROLLERS} "
                        "https:// URLs")
    return list(value)


def _only(payload: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise WireError("bad_payload", f"{what} must be a JSON object")
    unknown = set(payload) - allowed
    if unknown:
        raise WireError("bad_payload", f"{what} has unknown fields: {', '.join(sorted(unknown))}")
    return payload


@dataclass(frozen=True)
class SwarmState:
    """What the Pi's own daemon says of its swarm membership, for restarts."""

    node_id: str = ""
    state: str = "inactive"  # inactive | pending | active | error | locked
    manager: bool = False
    cluster_id: str = ""

    @classmethod
    def from_json(cls, value: Any) -> SwarmState:
        data = _only(value if value is not None else {}, set(cls.__dataclass_fields__), "swarm")
        node_id = data.get("node_id") or ""
        if node_id:
            validate_node_id(node_id)
        state = _text("swarm_state", data.get("state"), 16) or "inactive"
        cluster_id = _text("cluster_id", data.get("cluster_id"), 64)
        return cls(node_id, state, bool(data.get("manager", False)), cluster_id)


@dataclass(frozen=True)
class EnrollmentRequest:
    """Payload of `POST /v1/enrollments`, signed by the agent key."""

    hostname: str
    hardware_id: str
    arch: str = ""
    model: str = ""
    addresses: list[str] = field(default_factory=list)
    docker_version: str = ""
    agent_version: str = ""
    bootstrap_token: str = ""
    swarm: SwarmState = field(default_factory=SwarmState)
    local_proof: str = ""  # agent/wire/adoption.py: only the agent on a controller's Pi

    @classmethod
    def from_json(cls, value: Any) -> EnrollmentRequest:
        data = _only(value, set(cls.__dataclass_fields__), "enrollment request")
        return cls(
            hostname=validate_hostname(data.get("hostname")),
            hardware_id=validate_hardware_id(data.get("hardware_id")),
            arch=_text("arch", data.get("arch"), 32),
            model=_text("model", data.get("model"), 128),
            addresses=_addresses(data.get("addresses")),
            docker_version=_text("docker_version", data.get("docker_version"), 32),
            agent_version=_text("agent_version", data.get("agent_version"), 32),
            bootstrap_token=_text("bootstrap_token", data.get("bootstrap_token"), 128),
            swarm=SwarmState.from_json(data.get("swarm")),
            local_proof=_text("local_proof", data.get("local_proof"), 64),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JoinedReport:
    """Payload of `POST /v1/enrollments/<id>/joined`."""

    node_id: str

    @classmethod
    def from_json(cls, value: Any) -> JoinedReport:
        data = _only(value, {"node_id"}, "join report")
        return cls(validate_node_id(data.get("node_id")))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Grant:
    """Claims of a grant: the CA's word that this one agent may join as `role`."""

    hostname: str
    agent: str  # RFC 7638 thumbprint of the agent key the grant is bound to
    role: str
    join_token: str = field(repr=False)  # a secret: never in logs
    managers: list[str]
    labels: dict[str, str]
    cluster: str
    enrollment: str
    iat: int
    exp: int
    # Every controller's URL (the one that granted first): where to fail over to.
    controllers: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, value: Any) -> Grant:
        if not isinstance(value, dict):
            raise WireError("bad_grant", "grant must be a JSON object")
        # Signed by the CA, so unknown claims are a newer controller's, not an attack:
        # read what this agent knows, ignore the rest.
        data = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        try:
            grant = cls(**data)
        except TypeError:
            raise WireError("bad_grant", "grant is missing claims") from None
        if grant.role not in ROLES or not isinstance(grant.managers, list) or not grant.managers:
            raise WireError("bad_grant", "grant has a bad role or no manager addresses")
        try:
            validate_controller_urls(grant.controllers)
        except WireError:
            raise WireError("bad_grant", "grant's controllers must be https:// URLs") from None
        validate_hostname(grant.hostname)
        validate_labels(grant.labels)
        if not isinstance(grant.iat, int) or not isinstance(grant.exp, int):
            raise WireError("bad_grant", "grant times must be integers")
        return grant

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
