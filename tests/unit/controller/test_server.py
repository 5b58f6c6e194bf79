"""The server's set-up around the gates: open-file room and the gates' shares of the caps."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from controller.gate import MAX_PENDING, MAX_PENDING_PER_ADDRESS, Gates
from controller.server import raise_file_limit


@pytest.fixture
def file_limit() -> Iterator[tuple[int, int]]:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield saved
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_open_file_limit_is_raised_within_the_hard_limit(file_limit: tuple[int, int]) -> None:
    _, hard = file_limit
    if hard != resource.RLIM_INFINITY and hard < 4 * MAX_PENDING:
        pytest.fail(f"this machine's hard open-file limit ({hard}) is too low for the test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    raise_file_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (4 * MAX_PENDING, hard)
    raise_file_limit(wanted=100)  # never lowered
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 4 * MAX_PENDING


def test_each_gate_holds_its_share_of_the_caps() -> None:
    gates = Gates(lambda conn: None, timeout=10, count=8)
    gates.start()
    gates.stop()
    assert [g.pending.limit for g in gates.gates] == [MAX_PENDING // 8] * 8
    assert {g.pending.per_address for g in gates.gates} == {MAX_PENDING_PER_ADDRESS // 8}
