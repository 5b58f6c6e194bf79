"""DNS-SD names and TXT records, parsed defensively: any LAN host can send them."""

from __future__ import annotations

from dataclasses import dataclass

from agent.wire import PROTOCOL_VERSION
from agent.wire.errors import WireError
from agent.wire.keys import check_pin_format
from agent.wire.messages import validate_hostname

CONTROLLER_SERVICE = "_swarm-enroll._tcp.local."
NODE_SERVICE = "_swarm-node._tcp.local."
NODE_STATES = ("new", "pending", "approved", "joined", "rejected", "revoked")
_MAX_TXT_VALUE = 100


def decode_txt(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    """TXT properties as text; drops keys or values that are not short printable ASCII."""
    out: dict[str, str] = {}
    for key, value in properties.items():
        try:
            k = key.decode("ascii")
            v = (value or b"").decode("ascii")
        except (UnicodeDecodeError, AttributeError):
            continue
        if len(k) <= 16 and len(v) <= _MAX_TXT_VALUE and v.isprintable() and k.isprintable():
            out[k] = v
    return out


@dataclass(frozen=True)
class ControllerAd:
    """What a controller announces: where it is and which CA it answers for."""

    pin: str
    cluster: str
    addresses: tuple[str, ...]
    port: int

    def txt(self) -> dict[str, str]:
        return {"v": PROTOCOL_VERSION, "ca": self.pin, "cluster": self.cluster[:12]}

    @classmethod
    def parse(cls, txt: dict[str, str], addresses: list[str], port: int) -> ControllerAd:
        if txt.get("v") != PROTOCOL_VERSION:
            raise WireError("bad_txt", f"unsupported protocol version {txt.get('v')!r}")
        if not 0 < port < 65536 or not addresses:
            raise WireError("bad_txt", "controller announcement without address or port")
        return cls(check_pin_format(txt.get("ca", "")), txt.get("cluster", ""),
                   tuple(addresses), port)

    def urls(self) -> list[str]:
        return [
            f"https://[{a}]:{self.port}" if ":" in a else f"https://{a}:{self.port}"
            for a in self.addresses
        ]


@dataclass(frozen=True)
class NodeAd:
    """What an agent announces, so the admin sees Pis that never managed to enroll."""

    hostname: str
    hardware_id: str
    agent_id: str
    state: str
    role: str = ""
    arch: str = ""

    def txt(self) -> dict[str, str]:
        return {"v": PROTOCOL_VERSION, "hw": self.hardware_id, "id": self.agent_id,
                "state": self.state, "role": self.role, "arch": self.arch}

    @classmethod
    def parse(cls, instance: str, txt: dict[str, str]) -> NodeAd:
        if txt.get("v") != PROTOCOL_VERSION:
            raise WireError("bad_txt", f"unsupported protocol version {txt.get('v')!r}")
        state = txt.get("state", "")
        if state not in NODE_STATES:
            raise WireError("bad_txt", f"unknown node state {state!r}")
        return cls(validate_hostname(instance), txt.get("hw", "")[:64], txt.get("id", "")[:64],
                   state, txt.get("role", "")[:16], txt.get("arch", "")[:32])


def instance_name(hostname: str, service: str) -> str:
    return f"{hostname}.{service}"
