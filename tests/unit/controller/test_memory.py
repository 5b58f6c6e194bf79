"""The glibc knobs, through a stand-in C library (their effect on a controller after a
storm is measured by `make bench`, not here)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import controller.memory as memory


class Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.trimmed = threading.Event()

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        self.trimmed.set()
        return 1


def test_arenas_are_limited_and_memory_trimmed_through_glibc() -> None:
    libc = Libc()
    assert memory.limit_arenas(libc) and memory.trim(libc)
    assert libc.calls == [("mallopt", memory.M_ARENA_MAX, memory.ARENAS), ("malloc_trim", 0)]


def test_this_machines_glibc_takes_both() -> None:
    """Debian's glibc (the Pi's too): the knobs exist, so the bench measures them."""
    assert memory._libc() is not None and memory.limit_arenas()


def test_trimming_repeats_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = Libc()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    monkeypatch.setattr(memory, "TRIM_EVERY", 0.01)
    stop = threading.Event()
    memory.start_trimming(stop)
    assert libc.trimmed.wait(5)
    stop.set()


def test_without_glibc_nothing_is_called_and_no_thread_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_libc", lambda: None)
    before = threading.active_count()
    memory.start_trimming(threading.Event())
    assert not memory.limit_arenas() and not memory.trim()
    assert threading.active_count() == before
