"""Files every controller reads alike (rules, baseline): one shared text, seeded from the
first controller's file, replaced by a valid edit on any manager, mirrored back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.app import shared_rules
from controller.config import parse_config
from controller.rules import RulesError
from controller.shared import SharedFile
from controller.state import State
from controller.state.sqlite import SQLiteBackend


def parse(text: str, where: str) -> list[str]:
    if "bad" in text:
        raise ValueError(f"{where}: bad text")
    return text.split()


@pytest.fixture
def states(tmp_path: Path) -> Iterator[list[State]]:
    """Two controllers sharing one state."""
    made = [State(SQLiteBackend(tmp_path / "state.db")) for _ in range(2)]
    yield made
    for s in made:
        s.close()


def touch(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_seeded_once_edited_anywhere_mirrored_everywhere(tmp_path: Path,
                                                         states: list[State]) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    touch(first, "one two", 1_000_000)
    a = SharedFile(states[0], "words", first, parse)
    assert a.current() == ["one", "two"]
    touch(second, "something stale", 1_000_000)  # the second manager's own old copy
    states[1].refresh("shared/words")
    b = SharedFile(states[1], "words", second, parse)
    assert b.current() == ["one", "two"]  # the shared text wins over a stale file...
    assert second.read_text() == "one two"  # ...and is mirrored into it
    touch(second, "three", 2_000_000)  # an edit on the second manager
    assert b.current() == ["three"]
    states[0].refresh("shared/words")
    assert a.current() == ["three"] and first.read_text() == "three"


def test_a_bad_edit_changes_nothing(tmp_path: Path, states: list[State],
                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "a.txt"
    touch(path, "good", 1_000_000)
    shared = SharedFile(states[0], "words", path, parse)
    touch(path, "bad edit", 2_000_000)
    assert shared.current() == ["good"]
    assert "not taken" in caplog.text and "bad text" in caplog.text
    with pytest.raises(ValueError):
        shared.replace("bad again")
    assert shared.text() == "good"


def test_rules_are_shared(tmp_path: Path, states: list[State]) -> None:
    config = parse_config(tmp_path, {"advertise_addr": "10.0.0.1", "hostname": "c"})
    config.rules_path.write_text('[[rule]]\nmatch = "pi-*"\napprove = "token"\n')
    rules = shared_rules(states[0], config)
    assert [r.match for r in rules.current()] == ["pi-*"]
    with pytest.raises(RulesError, match="rule #1"):
        rules.replace('[[rule]]\nmatch = "x"\nrole = "boss"\n')
    assert [r.match for r in rules.current()] == ["pi-*"]


def test_an_edited_rule_must_match_host_names_but_a_file_in_use_still_serves(
        tmp_path: Path, states: list[State], caplog: pytest.LogCaptureFixture) -> None:
    """A glob no host name can match is refused in an edit, naming the problem; the file a
    controller of an earlier version seeded the shared state with is read as it is (an
    upgrade must not stop every controller)."""
    config = parse_config(tmp_path, {"advertise_addr": "10.0.0.1", "hostname": "c"})
    old_text = '[[rule]]\nmatch = "pi_*"\n[[rule]]\nmatch = "pi-*"\n'
    touch(config.rules_path, old_text, 1_000_000)
    rules = shared_rules(states[0], config)
    assert [r.match for r in rules.current()] == ["pi_*", "pi-*"]
    with pytest.raises(RulesError, match=r"rule #1: .match. = .pi_\*. can match no host.*only"):
        rules.replace('[[rule]]\nmatch = "pi_*"\n')
    with pytest.raises(RulesError, match="range 9-1 is empty"):
        rules.replace('[[rule]]\nmatch = "pi-[9-1]"\n[quorum]\nmanagers = 3\n'
                      'promote = "pi-*"\n')
    with pytest.raises(RulesError, match=r"\[quorum\]: promote = 'pi3_\*' can match no"):
        rules.replace('[[rule]]\nmatch = "pi-*"\n[quorum]\nmanagers = 3\n'
                      'promote = "pi3_*"\n')
    touch(config.rules_path, '[[rule]]\nmatch = "[z-a]*"\n', 2_000_000)  # a local edit
    assert [r.match for r in rules.current()] == ["pi_*", "pi-*"]
    assert "not taken" in caplog.text and "range z-a is empty" in caplog.text
    states[1].refresh("shared/rules")
    caplog.clear()
    again = shared_rules(states[1], parse_config(tmp_path / "other", {
        "advertise_addr": "10.0.0.2", "hostname": "d"}))
    assert [r.match for r in again.current()] == ["pi_*", "pi-*"]  # a restart still serves
    assert again.current() and caplog.text.count("served as it is") == 1  # said, once
    assert "'pi_*' can match no host name" in caplog.text


def test_a_bad_local_baseline_edit_is_the_reconcilers_error_until_fixed(
        tmp_path: Path, states: list[State]) -> None:
    from controller.baseline.reconcile import Reconciler
    from controller.baseline.spec import parse_baseline

    from .baseline.fakedocker import FakeDockerAPI

    path = tmp_path / "baseline.yml"
    touch(path, "services:\n  web:\n    image: w:1\n", 1_000_000)
    source = SharedFile(states[0], "baseline", path,
                        lambda text, where: parse_baseline(text, source=where))
    rec = Reconciler(FakeDockerAPI(), source)
    assert rec.reconcile("start").ok
    touch(path, "services:\n  web:\n    image: w:2\n    restart: always\n", 2_000_000)
    report = rec.reconcile("apply")
    assert report.error_code == "baseline_invalid" and "key 'restart'" in report.error
    assert "key 'restart'" in rec.status()["file_error"]
    touch(path, "services:\n  web:\n    image: w:2\n", 3_000_000)
    assert rec.reconcile("apply").ok and source.text().endswith("w:2\n")
