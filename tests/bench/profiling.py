"""py-spy on the storm's controller: where its time goes, grouped into named costs.

Two views of one storm each: `cpu` (samples of threads running on the CPU: what burns the
one core) and `wall` (--idle: also threads waiting on a lock, a socket or Docker: what a
request waits for). Samples are folded stacks; each category counts the samples whose
stack contains one of its frames (inclusive), the first matching category winning.
"""

from __future__ import annotations

import collections
import linecache
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (name, fragments of short frames "function (pkg/module.py)"); first match in this order
# wins. Idle categories are threads waiting for work, shown only by the `wall` view.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("Docker API: swarm.local() (GET /info)", ("local (controller/swarm.py)",)),
    ("Docker API: worker_token() (GET /swarm)", ("worker_token (controller/swarm.py)",)),
    ("Docker API: manager_addresses() (GET /nodes)",
     ("manager_addresses (controller/swarm.py)",)),
    ("Docker API: other", ("controller/swarm.py",)),
    ("grant signing (ES256 JWS)", ("sign_grant (agent/wire/jws.py)",)),
    ("request JWS verify (Ed25519) + thumbprint", ("verify_request (agent/wire/jws.py)",)),
    ("cluster state (documents, SQLite or swarm)", ("controller/state/",)),
    ("rules / bootstrap token check", ("controller/rules.py)", "controller/tokens.py)")),
    ("nonce store", ("controller/nonces.py)",)),
    ("message validation", ("agent/wire/messages.py)",)),
    ("TLS handshake / socket wrap", ("do_handshake", "wrap_socket", "cheroot/ssl/")),
    ("Flask / Werkzeug request handling", ("flask/", "werkzeug/")),
    ("cheroot HTTP + TLS I/O (parse, read, write; with proposal 1 also the handshake)",
     ("cheroot/server.py)", "cheroot/makefile.py)", "cheroot/workers/")),
    ("cheroot accept loop (accept, selector bookkeeping)", ("cheroot/connections.py)",)),
    ("logging", ("logging/",)),
    ("mDNS (zeroconf)", ("zeroconf/",)),
    ("baseline reconciler", ("controller/baseline/",)),
]
LOCK_WAIT = "waiting for a lock of the cluster state (a token's shared write, memory)"


# leaf frames of a thread that waits (for work, the network, a timer), not computes
_WAITS = ("Condition.wait", "Event.wait", "select (selectors.py)", "SocketIO.readinto",
          "sleep", "Thread._bootstrap_inner", "_run_once", "acquire", "Queue.get")


def _category(frames: list[str], leaf_line: str) -> str:
    if frames and "(controller/state/state.py)" in frames[-1] and "with " in leaf_line:
        return LOCK_WAIT
    stack = ";".join(frames)
    leaf = frames[-1] if frames else ""
    serving = "flask/" in stack or "controller/api/" in stack
    if not serving and any(w in leaf for w in _WAITS):
        kind = ("cheroot worker (queue or client socket)" if "threadpool" in stack else
                "cheroot accept loop" if "cheroot/" in stack else
                "baseline reconciler" if "controller/baseline/" in stack else
                "mDNS (zeroconf)" if "zeroconf/" in stack else "other thread")
        return f"idle: {kind} waiting"
    for name, frags in CATEGORIES:
        if any(f in stack for f in frags):
            return name
    return "other"


def available() -> str | None:
    return shutil.which("py-spy") or (shutil.which("py-spy", path=str(Path(sys.executable)
                                                                      .parent)))


def start(pid: int, out: Path, idle: bool, rate: int = 100) -> Callable[[], dict[str, Any]]:
    """Start `py-spy record` on pid; the returned stop() ends it and returns the summary."""
    exe = available()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy; it is in the dev "
                           "extra)")
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
            "--output", str(out), "--nonblocking", "--duration", "600"]
    if idle:
        argv.append("--idle")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop() -> dict[str, Any]:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not out.exists():
            return {"error": f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"}
        return summarize(out)

    return stop


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Categories (inclusive, first match wins) and the heaviest frames of the project and
    its libraries (inclusive and self), from a py-spy raw (folded) file."""
    cats: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        # drop the "process ..." / "thread ..." roots py-spy may add
        frames = [f for f in frames if "(" in f]
        short = [_short(f) for f in frames]
        cats[_category(short, _line_of(frames[-1]) if frames else "")] += n
        for f in set(short):
            inclusive[f] += n
        if short:
            self_[short[-1]] += n
    def share(c: collections.Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "samples": v, "share": v / total if total else 0.0}
                for k, v in c.most_common(top)]

    ours = collections.Counter({k: v for k, v in inclusive.items()
                                if any(p in k for p in ("controller/", "agent/"))})
    return {"samples": total, "categories": share(cats), "top_self": share(self_),
            "top_inclusive_project": share(ours), "file": _relative(path)}


def _relative(path: Path) -> str:
    """The raw file's path relative to the repository when it lies inside (results/)."""
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parents[2]))
    except ValueError:
        return str(path)


def _short(frame: str) -> str:
    """`func (/path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`; the project's
    own files as `controller/...` / `agent/...` wherever the tree lives."""
    func, _, loc = frame.partition(" (")
    file = loc.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/controller/", "/agent/"):
        if marker in file:
            file = marker[1:] + file.rsplit(marker, 1)[1]
            break
    else:
        for marker in ("site-packages/", "/lib/python3.11/"):
            if marker in file:
                file = file.split(marker, 1)[1]
                break
    return f"{func} ({file})"


def _line_of(frame: str) -> str:
    """The source line a raw frame points at (for telling a lock wait from work)."""
    loc = frame.partition(" (")[2].rstrip(")")
    file, _, line = loc.rpartition(":")
    if not file.startswith("/"):  # py-spy shortens paths below sys.path entries
        file = str(Path(__file__).resolve().parents[2] / file)
    return linecache.getline(file, int(line)) if line.isdigit() else ""
