"""Flash never reads or writes through a symlink (issue 10: a wrong path given by mistake).

A boot partition is FAT and has no symlinks. On a tree with some, flash used to delete
files outside the card and write agent.toml, with the token, wherever a link pointed.
Now it refuses with one line and exit 1, and nothing inside or outside changes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from controller.flash.bootfs import FlashError, atomic_write, read_card
from controller.flash.plan import FlashOptions, apply, make_plan

from .conftest import PIN, TOKEN, one_line_error, tree

Flash = Callable[..., Result]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Somebody's files next to the card, which no link may lead flash to."""
    d = tmp_path / "outside"
    (d / "swarm-enroll-like").mkdir(parents=True)
    (d / "swarm-enroll-like" / "precious.txt").write_text("keep me\n")
    (d / "notes.txt").write_text("user: admin\n")
    return d


def _refused(flash: Flash, card: Path, outside: Path, wheel: Path, secrets_dir: Path) -> str:
    card_before, outside_before = tree(card), tree(outside)
    result = flash(card, "--hostname", "pi-1", "--pin", PIN, "--wheel", wheel,
                   "--token-file", secrets_dir / "token")
    line = one_line_error(result)
    assert "symbolic links" in line and "nothing was written" in line
    assert tree(card) == card_before
    assert tree(outside) == outside_before
    assert TOKEN not in "".join(p.read_text(errors="replace") for p in outside.rglob("*")
                                if p.is_file())
    return line


def test_payload_dir_linked_outside_is_refused(flash: Flash, bookworm: Path, outside: Path,
                                               wheel: Path, secrets_dir: Path) -> None:
    (bookworm / "swarm-enroll").symlink_to(outside / "swarm-enroll-like")
    assert "swarm-enroll" in _refused(flash, bookworm, outside, wheel, secrets_dir)


def test_card_file_linked_outside_is_refused(flash: Flash, bookworm: Path, outside: Path,
                                             wheel: Path, secrets_dir: Path) -> None:
    (bookworm / "cmdline.txt").rename(outside / "cmdline.txt")
    (bookworm / "cmdline.txt").symlink_to(outside / "cmdline.txt")
    _refused(flash, bookworm, outside, wheel, secrets_dir)


def test_cloud_init_file_linked_outside_is_refused(flash: Flash, cloud_card: Path,
                                                   outside: Path, wheel: Path,
                                                   secrets_dir: Path) -> None:
    (cloud_card / "network-config").unlink()
    (cloud_card / "network-config").symlink_to(outside / "notes.txt")
    _refused(flash, cloud_card, outside, wheel, secrets_dir)


def test_link_deep_in_the_card_is_refused(flash: Flash, bookworm: Path, outside: Path,
                                          wheel: Path, secrets_dir: Path) -> None:
    (bookworm / "overlays" / "extra").symlink_to(outside)
    assert "overlays/extra" in _refused(flash, bookworm, outside, wheel, secrets_dir)


def test_card_reached_through_a_link_is_fine(flash: Flash, bookworm: Path, wheel: Path,
                                             secrets_dir: Path, tmp_path: Path) -> None:
    # The path the admin gives may itself be a link (a mount point's alias): only the
    # tree inside the card must be free of them.
    alias = tmp_path / "card-alias"
    alias.symlink_to(bookworm)
    result = flash(alias, "--hostname", "pi-1", "--pin", PIN, "--wheel", wheel,
                   "--token-file", secrets_dir / "token")
    assert result.exit_code == 0, result.output
    assert (bookworm / "swarm-enroll" / "agent.toml").is_file()


def test_link_made_after_planning_stops_the_writing(bookworm: Path, outside: Path,
                                                    wheel: Path) -> None:
    plan = make_plan(FlashOptions(bootfs=str(bookworm), hostname="pi-1", pin=PIN,
                                  token=TOKEN), wheel)
    (bookworm / "swarm-enroll").symlink_to(outside / "swarm-enroll-like")
    card_before, outside_before = tree(bookworm), tree(outside)
    with pytest.raises(FlashError, match="symbolic links"):
        apply(plan)
    assert (tree(bookworm), tree(outside)) == (card_before, outside_before)


def test_card_files_are_read_without_following_links(bookworm: Path, outside: Path) -> None:
    (bookworm / "user-data").symlink_to(outside / "notes.txt")
    with pytest.raises(OSError) as err:
        read_card(bookworm / "user-data")
    assert err.value.errno == errno.ELOOP


def test_a_stale_temporary_link_is_replaced_not_followed(bookworm: Path,
                                                          outside: Path) -> None:
    # An interrupted run's temporary name, now a link: the write must not go through it.
    (bookworm / ".agent.toml.swarm-enroll-tmp").symlink_to(outside / "notes.txt")
    atomic_write(bookworm / "agent.toml", b"ca_pin = 'x'\n")
    assert (outside / "notes.txt").read_text() == "user: admin\n"
    assert (bookworm / "agent.toml").read_bytes() == b"ca_pin = 'x'\n"
    assert not os.path.lexists(bookworm / ".agent.toml.swarm-enroll-tmp")


def test_a_failed_write_leaves_no_temporary(bookworm: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    def full_card(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_card)
    with pytest.raises(OSError):
        atomic_write(bookworm / "cmdline.txt", b"new\n")
    assert not list(bookworm.glob(".*swarm-enroll-tmp"))
    assert (bookworm / "cmdline.txt").read_text().startswith("console=")
