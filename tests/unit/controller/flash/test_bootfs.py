"""cmdline.txt stays one line with the card's own arguments; the boot partition is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.flash.bootfs import (
    HOOK_ARGS,
    FlashError,
    atomic_write,
    backup_once,
    edit_cmdline,
    open_bootfs,
    split_cmdline,
)

from .conftest import BOOKWORM_CMDLINE

IMAGER_HOOK = ("systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
               "systemd.unit=kernel-command-line.target")


def test_hook_is_appended_after_every_original_argument() -> None:
    edit = edit_cmdline(BOOKWORM_CMDLINE, hook=True, regdom="GB")
    assert edit.text.count("\n") == 1 and edit.text.endswith("\n")
    args = edit.text.split()
    original = BOOKWORM_CMDLINE.split()
    assert args[:len(original)] == original
    assert args[len(original):] == ["cfg80211.ieee80211_regdom=GB", *HOOK_ARGS]
    assert edit.foreign_run is None


def test_editing_twice_changes_nothing_more() -> None:
    once = edit_cmdline(BOOKWORM_CMDLINE, hook=True, regdom="DE").text
    twice = edit_cmdline(once, hook=True, regdom="DE").text
    assert twice == once
    assert once.count("systemd.run=") == 1 and once.count("ieee80211_regdom") == 1


def test_country_is_replaced_and_hook_removed_when_not_wanted() -> None:
    hooked = edit_cmdline(BOOKWORM_CMDLINE, hook=True, regdom="DE").text
    edit = edit_cmdline(hooked, hook=False, regdom="FR")
    assert edit.text == BOOKWORM_CMDLINE.rstrip("\n") + " cfg80211.ieee80211_regdom=FR\n"


def test_no_country_keeps_the_cards_own() -> None:
    text = BOOKWORM_CMDLINE.rstrip("\n") + " cfg80211.ieee80211_regdom=US\n"
    assert edit_cmdline(text, hook=False, regdom=None).text == text


def test_imagers_first_run_hook_is_taken_over() -> None:
    text = BOOKWORM_CMDLINE.rstrip("\n") + " " + IMAGER_HOOK + "\n"
    edit = edit_cmdline(text, hook=True, regdom=None)
    assert edit.foreign_run == "/boot/firstrun.sh"
    assert edit.text == BOOKWORM_CMDLINE.rstrip("\n") + " " + " ".join(HOOK_ARGS) + "\n"
    # without our hook (cloud-init), Imager's stays as it is
    assert edit_cmdline(text, hook=False, regdom=None).text == text


def test_quoted_values_and_missing_newline_survive() -> None:
    text = 'console=tty1 dyndbg="file drivers/usb/* +p"  quiet'
    assert split_cmdline(text) == ["console=tty1", 'dyndbg="file drivers/usb/* +p"', "quiet"]
    edit = edit_cmdline(text, hook=True, regdom=None)
    assert edit.text.startswith('console=tty1 dyndbg="file drivers/usb/* +p" quiet systemd.run=')
    assert not edit.text.endswith("\n")


@pytest.mark.parametrize("text", ["", "\n\n", "a=1\nb=2\n", 'a="unbalanced\n'])
def test_not_one_line_is_refused(text: str) -> None:
    with pytest.raises(FlashError):
        edit_cmdline(text, hook=True, regdom=None)


def test_two_foreign_runs_are_refused() -> None:
    with pytest.raises(FlashError, match="several"):
        edit_cmdline("quiet systemd.run=/a systemd.run=/b\n", hook=True, regdom=None)


def test_open_bootfs_recognises_a_boot_partition(bookworm: Path, cloud_card: Path) -> None:
    assert open_bootfs(bookworm).method("auto") == "firstrun"
    assert open_bootfs(cloud_card).method("auto") == "cloud-init"
    assert open_bootfs(cloud_card).method("firstrun") == "firstrun"
    with pytest.raises(FlashError, match="--method"):
        open_bootfs(bookworm).method("imager")


def test_open_bootfs_refuses(tmp_path: Path, bookworm: Path) -> None:
    with pytest.raises(FlashError, match="no such directory"):
        open_bootfs(tmp_path / "nope")
    with pytest.raises(FlashError, match="not a directory"):
        open_bootfs(bookworm / "config.txt")
    (bookworm / "config.txt").unlink()
    with pytest.raises(FlashError, match=r"not a Raspberry Pi boot partition.*config\.txt"):
        open_bootfs(bookworm)


def test_backup_is_taken_once(tmp_path: Path) -> None:
    f = tmp_path / "cmdline.txt"
    f.write_text("original\n")
    backup_once(f)
    atomic_write(f, b"changed\n")
    backup_once(f)
    assert (tmp_path / "cmdline.txt.swarm-enroll-orig").read_text() == "original\n"
    assert f.read_text() == "changed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmdline.txt",
                                                         "cmdline.txt.swarm-enroll-orig"]
