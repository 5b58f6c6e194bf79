"""Globs of host names (hostname rules, the keeper's `promote`, a token's hostname_glob),
checked when they are written: only host-name characters, and no empty range. A glob with
another character (`pi_*`, a stray bracket) or a set such as `[z-a]` matches no host name,
and would refuse every Pi without a word about why."""

from __future__ import annotations

import re

# Host names' characters, * and ?, and [...] sets of them (with ranges).
HOSTNAME_GLOB = r"(?:[A-Za-z0-9.*?-]|\[!?[A-Za-z0-9.-]+\])*"
_SET = re.compile(r"\[(!?)([^\]]+)\]")
EXAMPLE = "PiLike-0[3-8] or pi-*"


def glob_problem(glob: object) -> str | None:
    """What makes `glob` no glob of host names (None if it is one). Case is ignored, as
    matching ignores it."""
    if not isinstance(glob, str) or not glob:
        return "it is empty or not text"
    if len(glob) > 253:
        return "it is longer than 253 characters"
    if not re.fullmatch(HOSTNAME_GLOB, glob):
        return ("it may hold only letters, digits, '-', '.', and *, ? or [...] sets of "
                "those")
    for negated, chars in _SET.findall(glob):
        if negated:  # [!8-3] is any character: odd, but it matches
            continue
        for start, end in re.findall(r"(.)-(.)", chars):
            if start.lower() > end.lower():
                return f"its range {start}-{end} is empty (write {end}-{start})"
    return None
