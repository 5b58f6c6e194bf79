"""Parsing `avahi-browse -rtpk` output: untrusted LAN input, read defensively.

Lines are `;`-separated. `+`/`-` lines: event, interface, protocol, name, type, domain.
`=` lines (resolved) add host name, address, port and the TXT strings, each in double
quotes, space-separated. avahi escapes the name (`\\.`, `\\\\`, `\\DDD` decimal bytes) but
prints TXT strings raw, so a TXT value may hold `;`, `"` or even a newline: whatever we
cannot make sense of is dropped, never trusted, and every size is bounded.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agent.wire.mdns import decode_txt

MAX_OUTPUT = 256 * 1024  # bytes of avahi-browse output read per run
MAX_LINE = 4096
MAX_INSTANCES = 256
MAX_ADDRESSES = 8
MAX_TXT_STRINGS = 32


@dataclass(frozen=True)
class Resolved:
    """One instance as avahi resolved it, over all interfaces it was seen on."""

    txt: dict[str, str]
    addresses: tuple[str, ...]
    port: int


def unescape_label(text: str) -> str | None:
    """avahi_escape_label undone: `\\DDD` is a decimal byte, `\\x` is x. None if malformed
    or not UTF-8."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        digits = text[i + 1:i + 4]
        if len(digits) == 3 and digits.isascii() and digits.isdigit():
            if int(digits) > 255:
                return None
            out.append(int(digits))
            i += 4
        elif i + 1 < len(text):
            out += text[i + 1].encode("utf-8", "surrogateescape")
            i += 2
        else:
            return None
    try:
        label = out.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return label if label and len(out) <= 63 and label.isprintable() else None


def parse_txt(field: str) -> dict[str, str]:
    """`"k=v" "k2=v2"` as a dict (first of a repeated key wins, as RFC 6763 says)."""
    field = field.strip()
    if len(field) < 2 or not (field.startswith('"') and field.endswith('"')):
        return {}
    raw: dict[bytes, bytes | None] = {}
    for item in field[1:-1].split('" "')[:MAX_TXT_STRINGS]:
        key, sep, value = item.partition("=")
        if not key:
            continue
        k = key.encode("utf-8", "surrogateescape")
        if k not in raw:
            raw[k] = value.encode("utf-8", "surrogateescape") if sep else None
    return decode_txt(raw)


def _address(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if addr.is_link_local or addr.is_multicast or addr.is_unspecified:
        return None  # a link-local v6 address needs a scope we are not told
    return str(addr)


def parse_browse(output: bytes, service: str) -> dict[str, Resolved | None]:
    """Instances of `service` (e.g. `_swarm-enroll._tcp`) in the output: resolved ones with
    their data, the others (seen, not resolved this time) as None."""
    seen: dict[str, Resolved | None] = {}
    text = output[:MAX_OUTPUT].decode("utf-8", "surrogateescape")
    for line in text.splitlines():
        if len(line) > MAX_LINE:
            continue
        fields = line.split(";", 9)
        if len(fields) < 6 or fields[0] not in ("+", "=") or fields[4] != service:
            continue
        name = unescape_label(fields[3])
        if name is None or (name not in seen and len(seen) >= MAX_INSTANCES):
            continue
        seen.setdefault(name, None)
        if fields[0] != "=" or len(fields) != 10:
            continue
        address = _address(fields[7])
        if address is None or not fields[8].isascii() or not fields[8].isdigit():
            continue
        port = int(fields[8][:5])
        if not 0 < port < 65536:
            continue
        before = seen[name]
        if before is None:
            seen[name] = Resolved(parse_txt(fields[9]), (address,), port)
        elif address not in before.addresses and len(before.addresses) < MAX_ADDRESSES:
            seen[name] = Resolved(before.txt, (*before.addresses, address), before.port)
    return seen
