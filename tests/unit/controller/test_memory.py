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


class Clock:
    """process_time() as the trimmer reads it: CPU seconds the test says were used."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def process_time(self) -> float:
        return self.cpu


def test_memory_is_trimmed_after_a_busy_window_and_not_while_idle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    libc, clock = Libc(), Clock()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    monkeypatch.setattr(memory.time, "process_time", clock.process_time)
    windows = iter([0.0, 0.001, 1.0, 0.002, 0.001, 0.001])  # CPU used in each window
    checked = threading.Event()
    trims: list[int] = []
    collected: list[int] = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collected.append(1) or 0)

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            trims.append(sum(1 for c in libc.calls if c[0] == "malloc_trim"))
            try:
                clock.cpu += next(windows)
            except StopIteration:
                checked.set()
                return True
            return False

    memory.start_trimming(Stop())
    assert checked.wait(5)
    # idle, idle, busy (trim), the quiet window after it (trim: the burst's end), idle...
    assert trims == [0, 0, 0, 1, 2, 2, 2]
    assert len(collected) == 2  # a full collection before each trim


def test_without_glibc_nothing_is_called_and_no_thread_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_libc", lambda: None)
    before = threading.active_count()
    memory.start_trimming(threading.Event())
    assert not memory.limit_arenas() and not memory.trim()
    assert threading.active_count() == before
