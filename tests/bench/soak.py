"""`make demo-soak`: the demo, N times in a row from `down`; does it converge every time?

A benchmark, not a test: it takes minutes and its figures (how many runs converged, the
slowest convergence) go into results/soak.json and the README's Performance section. A
run that does not converge keeps what explains it (the controller log, where each
baseline service stood) under results/soak-failures/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from deploy.lab.config import load_cluster
from deploy.lab.demo import run_demo
from deploy.lab.lab import LOG_NAMES, Lab, LabError

from . import report
from .stats import summary

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def keep_failure(lab: Lab, config_controller: str, into: Path, error: str) -> None:
    """What a failed run leaves to read: the error and the controller's log."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "error.txt").write_text(error + "\n")
    log = lab.pi_dir(config_controller) / LOG_NAMES["controller"]  # also after a failed up
    if log.exists():
        shutil.copy(log, into / "controller.log")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.soak", description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--timeout", type=float, default=240.0, help="per wait of a run")
    p.add_argument("--config", type=Path, default=REPO / "deploy" / "lab" / "cluster.toml")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    config = load_cluster(args.config)
    lab = Lab()
    runs: list[dict[str, Any]] = []
    try:
        for i in range(1, args.runs + 1):
            lab.down()
            try:
                times = run_demo(lab, config, say=lambda _msg: None, timeout=args.timeout)
            except LabError as exc:
                where = args.out / "soak-failures" / f"{time.strftime('%Y%m%d-%H%M%S')}-run{i}"
                keep_failure(lab, config.controller or config.pis[0].name, where, str(exc))
                runs.append({"run": i, "converged": False, "error": str(exc)[:2000],
                             "kept": str(where.relative_to(REPO))})
                say(f"run {i}: FAILED: {str(exc)[:300]} (kept in {where})")
                continue
            after_ready = times["converged"] - times["ready"]
            runs.append({"run": i, "converged": True, **{f"{k}_s": round(v, 2)
                                                         for k, v in times.items()},
                         "converged_after_ready_s": round(after_ready, 2)})
            say(f"run {i}: converged {times['converged']:.1f}s after the start "
                f"({after_ready:.1f}s after every Pi was Ready)")
    finally:
        lab.down()
    ok = [r for r in runs if r["converged"]]
    result = {
        "date": report.now(), "machine": report.machine(), "runs": len(runs),
        "converged": len(ok),
        "converged_s": summary([r["converged_s"] for r in ok]) if ok else None,
        "converged_after_ready_s": summary([r["converged_after_ready_s"] for r in ok])
        if ok else None,
        "detail": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    slowest = max((r["converged_s"] for r in ok), default=0.0)
    say(f"{len(ok)} of {len(runs)} runs converged; slowest {slowest:.1f}s from the start; "
        f"wrote {args.out / 'soak.json'}")
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
