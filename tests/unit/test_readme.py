"""The README is the user's manual: every config key it must describe is there, and every
`enrollctl` / `enroll-lab` / `enroll-controller` / `enroll-agent` command it shows exists."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.cli import main as agent_main
from agent.config import AgentConfig
from controller.cli import main as controller_main
from controller.config import _TYPES as CONTROLLER_KEYS
from controller.enrollctl import main as enrollctl_main
from deploy.lab.cli import main as lab_main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PROGRAMS: dict[str, click.Group] = {"enrollctl": enrollctl_main, "enroll-lab": lab_main,
                                    "enroll-controller": controller_main,
                                    "enroll-agent": agent_main}


def _shown_commands() -> list[tuple[str, list[str]]]:
    """(program, words) for each command line in the README's shell blocks."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name in PROGRAMS:
                found.append((Path(words[0]).name, words[1:]))
    # inline `enrollctl nodes approve NAME [--reason R]` mentions too
    for span in re.findall(rf"`((?:{'|'.join(PROGRAMS)}) [^`]+)`", README):
        words = re.sub(r"[\[\]|]", " ", span).split()
        found.append((words[0], words[1:]))
    return found


def _section(title: str) -> str:
    start = README.index(f"\n{title}")
    end = re.compile(r"\n#{2,3} ").search(README, start + 1)
    return README[start:end.start() if end else None]


@pytest.mark.parametrize("key", [f.name for f in fields(AgentConfig)])
def test_every_agent_key_is_documented(key: str) -> None:
    assert f"`{key}`" in _section("### Agent")


@pytest.mark.parametrize("key", sorted(CONTROLLER_KEYS))
def test_every_controller_key_is_documented(key: str) -> None:
    assert f"| `{key}`" in _section("### Controller")


def test_the_readme_shows_commands_of_every_program() -> None:
    assert {program for program, _ in _shown_commands()} == set(PROGRAMS)


@pytest.mark.parametrize(("program", "words"), _shown_commands(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v)[:40])
def test_every_command_in_the_readme_exists(program: str, words: list[str]) -> None:
    group: click.Command = PROGRAMS[program]
    path: list[str] = []
    for word in words:
        if not isinstance(group, click.Group) or word.startswith("-"):
            break
        command = group.get_command(click.Context(group), word)
        if command is None:
            break
        path.append(word)
        group = command
    assert path, f"{program} {' '.join(words)}: no such command"
    result = CliRunner().invoke(PROGRAMS[program], [*path, "--help"])
    assert result.exit_code == 0, result.output
    options = {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
    for word in words[len(path):]:
        if word == "--":  # what follows is the command run inside a Pi
            break
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{program} {' '.join(path)}: no {word}"
