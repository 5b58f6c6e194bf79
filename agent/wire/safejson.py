"""JSON from a peer, parsed with its nesting bounded first.

json.loads recurses once per nesting level: 5,000 brackets raise RecursionError, which
no caller expects (a signed request answered 500 with a traceback). Every document this
protocol exchanges is a few levels deep, so anything deeper than MAX_DEPTH is refused as
the ValueError that callers already turn into a 4xx, before the parser sees it.

Bytes are read as UTF-8 only (RFC 8259: JSON between systems is UTF-8). json.loads
would guess UTF-16 or UTF-32 from the first bytes, and the bracket count must see the
very characters the parser sees: in UTF-16, "∠" is the bytes 20 22, a quote to a scanner
of bytes, and 1,100 brackets went past it as a document one level deep.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_OPEN_CLOSE = re.compile(rb"[\[\]{}]")


class TooDeep(ValueError):
    """The document nests deeper than MAX_DEPTH."""


def depth(data: bytes) -> int:
    """How deep brackets nest in `data`, outside strings (malformed input counts too)."""
    level = deepest = 0
    for bracket in _OPEN_CLOSE.findall(_STRING.sub(b"", data)):
        level += 1 if bracket in b"[{" else -1
        deepest = max(deepest, level)
    return deepest


def loads(data: str | bytes) -> Any:
    """json.loads, refusing (ValueError) documents nested deeper than MAX_DEPTH and bytes
    that are not UTF-8 (UnicodeDecodeError, a ValueError too)."""
    if isinstance(data, bytes):
        raw, text = data, data.decode("utf-8")  # the same characters, now known UTF-8
    else:
        raw, text = data.encode("utf-8", "surrogatepass"), data
    if depth(raw) > MAX_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # the count above missed a way to nest: still a bad document
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
