"""The request gate's pure parts: when a request is whole, and which waiting one goes."""

from __future__ import annotations

import pytest

from agent.wire.messages import MAX_BODY_BYTES
from controller.gate import MAX_HEAD_BYTES, PendingTable, request_ready

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _post(length: int, body: bytes = b"", name: bytes = b"Content-Length") -> bytes:
    return b"POST /v1/enrollments HTTP/1.1\r\nHost: x\r\n%s: %d\r\n\r\n%s" % (name, length, body)


@pytest.mark.parametrize(("data", "ready"), [
    (b"", False),
    (b"G", False),
    (GET[:-2], False),
    (GET, True),
    (GET + b"GET /", True),  # a pipelined start of the next one: the first is whole
    (_post(5, b"abc"), False),
    (_post(5, b"abcde"), True),
    (_post(5, b"abcde", name=b"content-length"), True),
    (_post(MAX_BODY_BYTES + 1), True),  # cheroot refuses it (413) without reading
    (_post(5).replace(b"5\r\n", b"5x\r\n"), True),  # cheroot refuses it (400)
    (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES, True),  # cheroot refuses it (413)
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES - 100), False),
])
def test_request_ready(data: bytes, ready: bool) -> None:
    assert request_ready(data) is ready


def test_chunked_request_is_ready_at_its_last_chunk() -> None:
    head = b"POST /v1/enrollments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert not request_ready(head + b"5\r\nhello\r\n")
    assert request_ready(head + b"5\r\nhello\r\n0\r\n\r\n")
    assert request_ready(head + b"5\r\n" + b"x" * (MAX_BODY_BYTES + 1))


def test_an_address_past_its_cap_loses_its_own_oldest() -> None:
    table = PendingTable(limit=10, per_address=2)
    assert table.add("a1", "10.0.0.9", 10) == []
    assert table.add("b1", "10.0.0.5", 5) == []
    assert table.add("a2", "10.0.0.9", 12) == []
    assert table.add("a3", "10.0.0.9", 13) == ["a1"]
    assert ("a1" in table, "b1" in table, table.count("10.0.0.9")) == (False, True, 2)


def test_past_the_total_cap_the_oldest_goes() -> None:
    table = PendingTable(limit=3, per_address=3)
    for deadline, key in [(12, "a"), (10, "b"), (11, "c")]:
        assert table.add(key, f"10.0.0.{deadline}", deadline) == []
    assert table.add("d", "10.0.0.9", 13) == ["b"]  # the nearest deadline: the oldest
    assert len(table) == 3


def test_deadlines_expire() -> None:
    table = PendingTable(limit=10, per_address=10)
    table.add("a", "10.0.0.1", 10)
    table.add("b", "10.0.0.1", 15)
    assert table.expired(9.9) == []
    assert table.expired(10) == ["a"]
    table.remove("b")
    assert (len(table), table.count("10.0.0.1")) == (0, 0)
