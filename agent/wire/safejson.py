"""JSON from a peer, parsed with its nesting bounded first.

json.loads recurses once per nesting level: 5,000 brackets raise RecursionError, which
no caller expects (a signed request answered 500 with a traceback). Every document this
protocol exchanges is a few levels deep, so anything deeper than MAX_DEPTH is refused as
the ValueError that callers already turn into a 4xx, before the parser sees it.
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
    """json.loads, refusing (ValueError) documents nested deeper than MAX_DEPTH."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if depth(raw) > MAX_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(raw)
