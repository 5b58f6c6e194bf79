"""The swarm-enroll wheel that goes onto the card (and an optional wheelhouse)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from controller.flash.bootfs import FlashError

WHEEL_NAME = re.compile(r"^swarm_enroll-(?P<version>[0-9][0-9A-Za-z.+!]*)-py3-none-any\.whl$")


def check_wheel(path: str | Path) -> tuple[Path, str]:
    """(path, version) of a swarm-enroll wheel, or FlashError."""
    p = Path(path)
    if not p.is_file():
        raise FlashError(f"--wheel {p}: no such file")
    match = WHEEL_NAME.match(p.name)
    if not match:
        raise FlashError(f"--wheel {p.name} is not a swarm-enroll wheel "
                         "(swarm_enroll-<version>-py3-none-any.whl, from 'make dist')")
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise FlashError(f"--wheel {p}: not a readable wheel ({exc})") from None
    if "agent/__init__.py" not in names or "agent/cli.py" not in names:
        raise FlashError(f"--wheel {p} does not contain the agent package")
    return p, match.group("version")


def check_wheelhouse(path: str | Path) -> list[Path]:
    p = Path(path)
    if not p.is_dir():
        raise FlashError(f"--wheelhouse {p}: no such directory")
    wheels = sorted(w for w in p.iterdir() if w.is_file() and w.name.endswith(".whl"))
    if not wheels:
        raise FlashError(f"--wheelhouse {p} holds no .whl files (fill it with 'pip download' "
                         "or 'pip wheel' for the Pi's architecture)")
    return wheels


def source_tree() -> Path | None:
    """The swarm-enroll source tree this code runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        if 'name = "swarm-enroll"' in pyproject.read_text():
            return root
    except OSError:
        pass
    return None


def build_wheel(out_dir: Path | None = None) -> Path:
    """Build the wheel of the current source tree with `pip wheel --no-deps`."""
    root = source_tree()
    if root is None:
        raise FlashError("no --wheel given and not running from a swarm-enroll source tree: "
                         "pass --wheel swarm_enroll-<version>-py3-none-any.whl ('make dist')")
    out = out_dir or Path(tempfile.mkdtemp(prefix="swarm-enroll-wheel-"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
         str(root)],
        capture_output=True, text=True, timeout=600,
    )
    built = sorted(out.glob("swarm_enroll-*.whl"))
    if result.returncode != 0 or not built:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise FlashError(f"building the wheel from {root} failed ({last}); build it with "
                         "'make dist' and pass --wheel")
    return built[-1]
