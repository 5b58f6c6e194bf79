"""Hostname rules: which role a Pi gets and who approves it (first match wins), and the
quorum keeper's settings (`[quorum]`), which live in the same file so that every
controller reads them alike."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.wire.errors import WireError
from agent.wire.messages import AVAILABILITIES, ROLES, validate_labels
from controller.hostglob import glob_problem

APPROVALS = ("manual", "token", "auto")
_KEYS = {"match", "role", "approve", "labels", "availability"}
_QUORUM_KEYS = {"managers", "promote", "down_after_seconds"}
MANAGER_COUNTS = (3, 5, 7)
MIN_DOWN_AFTER = 10  # seconds; shorter would count a rebooting manager as lost


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


def _known_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}")


def _rule(index: int, raw: Any, new: bool) -> Rule:
    where = f"rule #{index + 1}"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a table")
    _known_keys(raw, _KEYS, where)
    match = raw.get("match")
    if not isinstance(match, str) or not match:
        raise RulesError(f"{where}: 'match' must be a non-empty glob such as \"mgr-*\"")
    if new and (problem := glob_problem(match)):
        raise RulesError(f"{where}: 'match' = {match!r} can match no host name: {problem}")
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


@dataclass(frozen=True)
class QuorumSettings:
    """`[quorum]`: keep `managers` healthy managers, promoting only hostnames that match
    `promote`; a manager Down for longer than `down_after` seconds counts as lost."""

    managers: int
    promote: str
    down_after: float = 120.0

    def may_promote(self, hostname: str) -> bool:
        return fnmatch.fnmatchcase(hostname.lower(), self.promote.lower())


def _quorum(raw: Any, new: bool = False) -> QuorumSettings:
    if not isinstance(raw, dict):
        raise RulesError("[quorum] must be a table")
    _known_keys(raw, _QUORUM_KEYS, "[quorum]")
    managers = raw.get("managers")
    if isinstance(managers, bool) or not isinstance(managers, int) \
            or managers not in MANAGER_COUNTS:
        raise RulesError(f"[quorum]: managers must be 3, 5 or 7, not {managers!r}: 1 or 2 "
                         "managers tolerate no failure, an even count tolerates no more than "
                         "the odd one below it, and more than 7 slow Raft down")
    promote = raw.get("promote")
    if not isinstance(promote, str) or not promote:
        raise RulesError("[quorum]: promote must be a non-empty glob of the hostnames the "
                         "keeper may make managers, such as \"pi3-*\"")
    if new and (problem := glob_problem(promote)):
        raise RulesError(f"[quorum]: promote = {promote!r} can match no host name: {problem}")
    down_after = raw.get("down_after_seconds", 120)
    if isinstance(down_after, bool) or not isinstance(down_after, int | float) \
            or down_after < MIN_DOWN_AFTER:
        raise RulesError(f"[quorum]: down_after_seconds must be a number of seconds, at least "
                         f"{MIN_DOWN_AFTER} (a manager rebooting must not count as lost)")
    return QuorumSettings(managers, promote, float(down_after))


def _load(text: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}") from None
    unknown = set(data) - {"rule", "quorum"}
    if unknown:
        raise RulesError(f"unknown top-level key(s) {', '.join(sorted(unknown))}; use [[rule]] "
                         "and [quorum]")
    return data


def parse_rules(text: str, new: bool = False) -> list[Rule]:
    """The rules, in order; the whole file is checked, [quorum] included. A `new` text (an
    edit, `init`'s file) must also have globs of host names (controller/hostglob.py); a
    text already taken is read as it is, so that an upgrade never stops a controller."""
    data = _load(text)
    raw = data.get("rule", [])
    if not isinstance(raw, list):
        raise RulesError("rules must be written as [[rule]] tables")
    rules = [_rule(i, r, new) for i, r in enumerate(raw)]
    if "quorum" in data:
        _quorum(data["quorum"], new)
    return rules


def quorum_settings(text: str) -> QuorumSettings | None:
    """The quorum keeper's settings, or None when the file has no [quorum] table (off)."""
    data = _load(text)
    return _quorum(data["quorum"]) if "quorum" in data else None


def load_rules(path: Path) -> list[Rule]:
    """A rules file about to be taken (`init`): checked as a new text."""
    try:
        return parse_rules(path.read_text(), new=True)
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

# The quorum keeper (off without this table): keeps an odd number of healthy managers
# by promoting enrolled workers whose hostname matches `promote`, and demotes the
# managers it promoted once they are too many. A manager Down for longer than
# down_after_seconds counts as lost (it is demoted when a replacement can be promoted).
# [quorum]
# managers = 3                 # 3, 5 or 7
# promote = "pi3-*"            # glob of the hostnames it may make managers
# down_after_seconds = 120
"""
