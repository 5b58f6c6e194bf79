"""Logging for both daemons, with a last-line guard that masks secrets.

Nothing is meant to log a secret in the first place; the filter is there so
that a Docker error message quoting a join token cannot leak one either.
"""

from __future__ import annotations

import logging
import re
import sys

_SECRET = re.compile(r"(SWMTKN-1-[0-9a-z-]+|se[ab]_[A-Za-z0-9_-]{8,})")


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: m.group(0)[:9] + "…[redacted]", text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str = "info", file: str = "") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file))
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=handlers, force=True)
    logging.getLogger("zeroconf").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
