"""Hostname rules: first match wins, case-insensitive globs, errors that name the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.rules import (
    DEFAULT_RULES,
    QuorumSettings,
    Rule,
    RulesError,
    load_rules,
    match_rule,
    parse_rules,
    quorum_settings,
)

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


def test_a_file_to_take_must_have_globs_of_host_names(tmp_path: Path) -> None:
    """`init`'s rules file is checked as an edit is; a text already shared is read as it is
    (parse_rules), since an upgrade must not stop a controller."""
    path = tmp_path / "rules.toml"
    text = '[[rule]]\nmatch = "Pi_Zero-*"\nrole = "manager"\n'
    path.write_text(text)
    with pytest.raises(RulesError, match="can match no host name"):
        load_rules(path)
    assert [r.match for r in parse_rules(text)] == ["Pi_Zero-*"]


QUORUM = GOOD + '[quorum]\nmanagers = 3\npromote = "pi3-*"\ndown_after_seconds = 60\n'


def test_quorum_settings() -> None:
    assert [r.match for r in parse_rules(QUORUM)] == ["ok-*"]  # the rules, as before
    settings = quorum_settings(QUORUM)
    assert settings == QuorumSettings(3, "pi3-*", 60.0)
    assert settings.may_promote("PI3-07") and not settings.may_promote("pi4-1")
    assert quorum_settings(GOOD) is None and quorum_settings("") is None
    default = quorum_settings('[quorum]\nmanagers = 5\npromote = "*"\n')
    assert default is not None and default.down_after == 120


@pytest.mark.parametrize(("table", "names"), [
    ("managers = 2\npromote = \"x\"", ["managers", "3, 5 or 7", "2", "tolerate no failure"]),
    ("managers = 4\npromote = \"x\"", ["managers", "4", "even"]),
    ("managers = 1\npromote = \"x\"", ["managers", "1"]),
    ("managers = 9\npromote = \"x\"", ["managers", "9", "slow Raft"]),
    ("managers = true\npromote = \"x\"", ["managers", "True"]),
    ("managers = 3.0\npromote = \"x\"", ["managers", "3.0"]),
    ("promote = \"x\"", ["managers", "None"]),
    ("managers = 3", ["promote", "glob"]),
    ("managers = 3\npromote = \"\"", ["promote"]),
    ("managers = 3\npromote = \"x\"\ndown_after_seconds = 5", ["down_after_seconds", "10"]),
    ("managers = 3\npromote = \"x\"\ndown_after_seconds = \"2m\"", ["down_after_seconds"]),
    ("managers = 3\npromote = \"x\"\nmanager = 3", ["unknown key", "manager"]),
])
def test_bad_quorum_table_is_refused_with_the_key(table: str, names: list[str]) -> None:
    text = GOOD + "[quorum]\n" + table + "\n"
    msg = _error(text)  # parse_rules checks the whole file: a bad table is never taken
    assert msg.startswith("[quorum]") and all(n in msg for n in names), msg
    with pytest.raises(RulesError):
        quorum_settings(text)


def test_quorum_must_be_a_table() -> None:
    assert "[quorum] must be a table" in _error(GOOD.replace("[[rule]]", "quorum = 3\n[[rule]]"))


def test_the_default_rules_show_a_valid_quorum_table() -> None:
    example = DEFAULT_RULES.split("# [quorum]\n")[1]
    table = "".join(line.removeprefix("# ") + "\n" for line in example.splitlines())
    assert quorum_settings(DEFAULT_RULES + "[quorum]\n" + table) == QuorumSettings(
        3, "pi3-*", 120)
