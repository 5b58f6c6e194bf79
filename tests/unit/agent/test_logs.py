"""The last-line guard that masks secrets in log output."""

from __future__ import annotations

import io
import logging

import pytest

from agent.logs import RedactingFormatter, redact

JOIN = "SWMTKN-1-" + "3" * 50 + "-" + "9" * 25
BOOT = "seb_" + "AbC-_9" * 7
ADMIN = "sea_" + "ZyX_-1" * 7


@pytest.mark.parametrize("secret", [JOIN, BOOT, ADMIN])
def test_redact_masks_secret(secret: str) -> None:
    text = f"docker said: invalid join token {secret} (retry)"
    masked = redact(text)
    assert secret not in masked
    assert secret[12:] not in masked
    assert "[redacted]" in masked
    assert masked.startswith("docker said: invalid join token ")
    assert masked.endswith(" (retry)")


def test_redact_masks_every_occurrence() -> None:
    masked = redact(f"{JOIN} and {BOOT} and {ADMIN}")
    assert masked.count("[redacted]") == 3


def test_redact_leaves_ordinary_text() -> None:
    text = "pi-1 joined as worker (node abcdefghijklmnopqrstuvwxy); seb_ short"
    assert redact(text) == text


def test_formatter_redacts_messages_and_args() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logger = logging.getLogger("unit.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("join failed: %s", JOIN)
        logger.error(f"token {BOOT}")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert JOIN not in out and BOOT not in out
    assert out.count("[redacted]") == 2
