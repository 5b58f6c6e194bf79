"""Globs of host names are checked when written: one that no host name can match would
refuse every Pi without saying why."""

from __future__ import annotations

import fnmatch

import pytest

from controller.hostglob import glob_problem


@pytest.mark.parametrize("glob", ["pi-*", "PiLike-0[3-8]", "[!a-c]x", "pi?.lan", "[-a]x",
                                  "PI-[A-Z]*", "*", "[!8-3]x"])  # the last: any, then x
def test_globs_of_host_names_pass(glob: str) -> None:
    assert glob_problem(glob) is None


@pytest.mark.parametrize(("glob", "problem"), [
    ("", "empty"),
    (5, "not text"),
    ("x" * 254, "longer than 253"),
    ("pi_*", "only letters"),
    ("[", "only letters"),
    ("pi-0]", "only letters"),
    ("pi-[]", "only letters"),
    ("pi-0[8-3]", "range 8-3 is empty (write 3-8)"),
    ("[Z-a]*", "range Z-a is empty"),  # matching ignores case: z-a
])
def test_globs_no_host_name_can_match_are_named(glob: object, problem: str) -> None:
    said = glob_problem(glob)
    assert said is not None and problem in said


def test_an_empty_range_indeed_matches_nothing() -> None:
    """Why it is refused: fnmatch takes it without a word, and then matches no name."""
    assert not any(fnmatch.fnmatchcase(f"pi-0{i}", "pi-0[8-3]") for i in range(10))
