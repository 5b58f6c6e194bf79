"""Hostname rules: which role a Pi gets and who approves it. First match wins."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.wire.errors import WireError
from agent.wire.messages import AVAILABILITIES, ROLES, validate_labels

APPROVALS = ("manual", "token", "auto")
_KEYS = {"match", "role", "approve", "labels", "availability"}


class RulesError(ValueError):
    """The rules file is wrong; the message names the rule and the key."""


@dataclass(frozen=True)
class Rule:
    match: str
    role: str = "worker"
    approve: str = "manual"
    labels: dict[str, str] = field(default_factory=dict)
    availability: str = "active"

    def matches(self, hostname: str) -> bool:
        return fnmatch.fnmatchcase(hostname.lower(), self.match.lower())


def _rule(index: int, raw: Any) -> Rule:
    where = f"rule #{index + 1}"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(_KEYS))}")
    match = raw.get("match")
    if not isinstance(match, str) or not match:
        raise RulesError(f"{where}: 'match' must be a non-empty glob such as \"mgr-*\"")
    where = f"rule #{index + 1} (match = {match!r})"
    role = raw.get("role", "worker")
    if role not in ROLES:
        raise RulesError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    approve = raw.get("approve", "manual")
    if approve not in APPROVALS:
        raise RulesError(f"{where}: approve must be one of {', '.join(APPROVALS)}, not {approve!r}")
    availability = raw.get("availability", "active")
    if availability not in AVAILABILITIES:
        raise RulesError(f"{where}: availability must be one of {', '.join(AVAILABILITIES)}")
    try:
        labels = validate_labels(raw.get("labels", {}))
    except WireError as exc:
        raise RulesError(f"{where}: {exc.message}") from None
    return Rule(match, role, approve, labels, availability)


def parse_rules(text: str) -> list[Rule]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}") from None
    unknown = set(data) - {"rule"}
    if unknown:
        raise RulesError(f"unknown top-level key(s) {', '.join(sorted(unknown))}; use [[rule]]")
    raw = data.get("rule", [])
    if not isinstance(raw, list):
        raise RulesError("rules must be written as [[rule]] tables")
    return [_rule(i, r) for i, r in enumerate(raw)]


def load_rules(path: Path) -> list[Rule]:
    try:
        return parse_rules(path.read_text())
    except RulesError as exc:
        raise RulesError(f"{path}: {exc}") from None


def match_rule(rules: list[Rule], hostname: str) -> Rule | None:
    return next((r for r in rules if r.matches(hostname)), None)


DEFAULT_RULES = """\
# Hostname rules: first match wins. `match` is a case-insensitive glob.
# approve: manual (an admin approves) | token (a valid bootstrap token approves,
# otherwise manual) | auto (anyone on the LAN claiming the name; labs only).

[[rule]]
match = "mgr-*"
role = "manager"
approve = "manual"

[[rule]]
match = "*"
role = "worker"
approve = "token"
"""
