"""Errors that cross the wire: each has a stable code and a message saying what to fix."""

from __future__ import annotations

from typing import Any


class WireError(Exception):
    """A request or grant that the receiving side must refuse.

    `code` is the machine-readable `error` field of a 4xx answer; `status` its
    HTTP status; the message tells the sender what to fix and never holds a secret.
    `detail` adds fields to the answer (the claimants of an ambiguous name, say), and
    `retry_after` (seconds) becomes a Retry-After header.
    """

    def __init__(self, code: str, message: str, status: int = 400,
                 detail: dict[str, Any] | None = None, retry_after: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = dict(detail or {})
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        return {**self.detail, "error": self.code, "message": self.message}
