"""Hostname rules: first match wins, case-insensitive globs, errors that name the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.rules import DEFAULT_RULES, Rule, RulesError, load_rules, match_rule, parse_rules

RULES = """
[[rule]]
match = "mgr-*"
role = "manager"
approve = "manual"
labels = { "pi.model" = "zero-w" }
availability = "drain"

[[rule]]
match = "mgr-special"
role = "worker"
approve = "auto"

[[rule]]
match = "pi-??"
approve = "token"
"""


def test_parse_rules() -> None:
    rules = parse_rules(RULES)
    assert rules[0] == Rule("mgr-*", "manager", "manual", {"pi.model": "zero-w"}, "drain")
    assert rules[2] == Rule("pi-??", "worker", "token", {}, "active")


def test_first_match_wins() -> None:
    rules = parse_rules(RULES)
    # "mgr-special" also matches rule 2, but rule 1 comes first.
    assert match_rule(rules, "mgr-special") is rules[0]
    assert match_rule(list(reversed(rules)), "mgr-special").match == "mgr-special"


def test_glob_is_case_insensitive() -> None:
    rules = parse_rules(RULES)
    assert match_rule(rules, "MGR-1") is rules[0]
    assert match_rule(rules, "Pi-07") is rules[2]
    upper = parse_rules('[[rule]]\nmatch = "PI-*"\n')
    assert match_rule(upper, "pi-1") is upper[0]


def test_no_match_is_none() -> None:
    rules = parse_rules(RULES)
    assert match_rule(rules, "pi-123") is None  # ?? is exactly two characters
    assert match_rule(rules, "node-1") is None
    assert match_rule([], "anything") is None


def test_empty_file_has_no_rules() -> None:
    assert parse_rules("") == []


def test_default_rules() -> None:
    rules = parse_rules(DEFAULT_RULES)
    assert match_rule(rules, "mgr-1").role == "manager"
    assert match_rule(rules, "mgr-1").approve == "manual"
    assert match_rule(rules, "pi-1").approve == "token"


def _error(text: str) -> str:
    with pytest.raises(RulesError) as err:
        parse_rules(text)
    return str(err.value)


GOOD = '[[rule]]\nmatch = "ok-*"\n\n'


def test_unknown_key_names_rule() -> None:
    msg = _error(GOOD + '[[rule]]\nmatch = "pi-*"\nrol = "worker"\n')
    assert "rule #2" in msg and "rol" in msg


def test_bad_role_names_rule() -> None:
    msg = _error(GOOD + '[[rule]]\nmatch = "pi-*"\nrole = "king"\n')
    assert "rule #2" in msg and "'pi-*'" in msg and "king" in msg


def test_bad_approve_names_rule() -> None:
    msg = _error(GOOD + '[[rule]]\nmatch = "pi-*"\napprove = "always"\n')
    assert "rule #2" in msg and "'pi-*'" in msg and "always" in msg


def test_bad_availability_names_rule() -> None:
    msg = _error(GOOD + '[[rule]]\nmatch = "pi-*"\navailability = "off"\n')
    assert "rule #2" in msg and "'pi-*'" in msg and "availability" in msg


@pytest.mark.parametrize("labels", ['"zone=a"', '{ "zone" = 1 }', '{ "-bad" = "x" }'])
def test_bad_labels_names_rule(labels: str) -> None:
    msg = _error(GOOD + f'[[rule]]\nmatch = "pi-*"\nlabels = {labels}\n')
    assert "rule #2" in msg and "'pi-*'" in msg and "label" in msg


def test_missing_match_names_rule() -> None:
    msg = _error(GOOD + '[[rule]]\nrole = "worker"\n')
    assert "rule #2" in msg and "match" in msg


def test_toml_syntax_error_names_the_line() -> None:
    msg = _error(GOOD + '[[rule]]\nmatch = "pi-*\n')
    assert "TOML" in msg and "line 5" in msg


def test_top_level_key_refused() -> None:
    assert "rules" in _error('rules = 1\n')


def test_rule_must_be_array_of_tables() -> None:
    assert "[[rule]]" in _error('[rule]\nmatch = "x"\n')


def test_load_rules_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nmatch = "x"\nrole = "boss"\n')
    with pytest.raises(RulesError) as err:
        load_rules(path)
    assert str(path) in str(err.value) and "rule #1" in str(err.value)
