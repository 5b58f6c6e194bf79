"""`python -m tests.bench`: run the benchmarks, write results/latest.json and latest.md.

Everything runs in the benchmarks' own lab (see benchlab.py), built once and torn down in
a finally, whatever happens. `--smoke` is the tiny run of every benchmark that `make test`
does (figures meaningless, code paths all exercised).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import footprint, profiling, report
from .benchlab import BenchLabSpec, bench_lab
from .checkin import run_checkin
from .floor import SHARED, store_floor, summarize_floor
from .join import Variant, run_join
from .stats import summary
from .storm import IDLE_WAIT, check_variant, storm_once, variant_env

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results"
PROPOSALS = HERE / "proposals"
ALL = ("join", "footprint", "checkin", "storm", "profile", "import")
WARMUP_MOST = 1000  # agents in the storms' warm-up (the largest N, up to this)
# the agent of a patched copy (PYTHONPATH): the same entry point as the enroll-agent script
PATCHED_AGENT = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]


def agent_footprint(lab: Any, pis: Any, seconds: float, fp: dict[str, Any]) -> None:
    """The join benchmark's agents, joined and left alone: RSS and CPU over `seconds`."""
    for name in pis.agents:
        footprint.wait_joined(lab.log_path(name, "agent"))
    time.sleep(min(5.0, seconds))  # past the join's aftermath
    pids = {n: p.pid for n, p in pis.agents.items()}
    say(f"agent idle footprint: {len(pids)} agents, {seconds:.0f} s")
    idle = footprint.agent_idle(pids, seconds)
    agents = idle["agents"].values()
    fp["agent_window_s"] = idle["window_s"]
    fp["agent_rss_mb"] = summary([a["rss_max_mb"] for a in agents])
    fp["agent_rss_anon_mb"] = summary([a["rss_anon_mb"] for a in agents])
    fp["agent_rss_file_mb"] = summary([a["rss_file_mb"] for a in agents])
    fp["agent_cpu_percent"] = summary([a["cpu_percent"] for a in agents])
    fp["agent_raw"] = idle


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny N everywhere (make test)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument("--pairs", type=int, default=5, help="join pairs (agent vs bare)")
    p.add_argument("--manual", type=int, default=3, help="manual-approval Pis")
    p.add_argument("--storm-n", default="100,1000,5000", help="comma list of N")
    p.add_argument("--storm-reps", type=int, default=3, help="runs per N")
    p.add_argument("--concurrency", type=int, default=256,
                   help="simulated agents in flight at once (all start at t0)")
    p.add_argument("--storm-deadline", type=float, default=300.0)
    p.add_argument("--storm-idle", type=float, default=IDLE_WAIT,
                   help="seconds after a storm before the controllers' idle RSS is read "
                        "(they trim what a burst freed in the 5 s windows after it)")
    p.add_argument("--storm-managers", type=int, choices=(1, 3), default=3,
                   help="managers of the storm's swarm, each with a controller (1: the "
                        "serving controller alone, without Raft replication)")
    p.add_argument("--records-n", type=int, default=1000,
                   help="storm N whose controller is also measured restarted over its records")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="agent idle window")
    p.add_argument("--profile-n", type=int, default=1000)
    p.add_argument("--import-reps", type=int, default=5)
    p.add_argument("--checkin-reps", type=int, default=5, help="`enroll-agent check` runs")
    p.add_argument("--try-proposals", action="store_true",
                   help="also run the storms on a /tmp copy with proposals/*.patch applied")
    p.add_argument("--compare-src", type=Path, help="like --try-proposals, with this tree")
    p.add_argument("--state-dir", type=Path, default=BenchLabSpec.state_dir)
    p.add_argument("--prefix", default=BenchLabSpec.prefix)
    p.add_argument("--subnet", default=BenchLabSpec.subnet)
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite latest.md (and the targets) from the latest.json in --out")
    args = p.parse_args(argv)
    if args.smoke:
        args.pairs, args.manual, args.storm_n, args.storm_reps = 1, 1, "5,12", 1
        args.idle_seconds, args.profile_n, args.import_reps = 3.0, 12, 1
        args.checkin_reps = 1
        args.records_n, args.concurrency, args.storm_deadline = 12, 4, 120.0
        args.storm_idle = 1.0  # nothing is measured: only that it runs
        args.try_proposals = True
    return args


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def patched_copy(patches: list[Path]) -> tuple[Path, list[str]]:
    """agent/ and controller/ copied to /tmp with each proposal applied (skipped if it no
    longer applies, e.g. once it has been merged)."""
    dest = Path(tempfile.mkdtemp(prefix="swarm-enroll-proposal-"))
    for pkg in ("agent", "controller"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    applied = []
    for patch in patches:
        r = subprocess.run(["git", "apply", str(patch)], cwd=dest, capture_output=True,
                           text=True)
        if r.returncode == 0:
            applied.append(patch.name)
        else:
            say(f"proposal {patch.name} does not apply (merged already?): {r.stderr[-200:]}")
    return dest, applied


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        res = json.loads((args.out / "latest.json").read_text())
        res["targets"] = report.targets(res)
        # the profiles' categories again, from the raw py-spy files
        for holder, key in ((res.get("profile", {}), "cpu"), (res.get("profile", {}), "wall"),
                            (res.get("compare", {}), "profile_cpu")):
            old = holder.get(key)
            raw = REPO / old.get("file", "") if old else None  # (an absolute path stays)
            if old and raw and raw.is_file():
                holder[key] = {**old, **profiling.summarize(raw)}
        (args.out / "latest.json").write_text(json.dumps(res, indent=1) + "\n")
        (args.out / "latest.md").write_text(report.markdown(res))
        return 0
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - set(ALL)
    if unknown:
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}")
    spec = BenchLabSpec(args.state_dir, args.prefix, args.subnet)
    ns = [int(x) for x in args.storm_n.split(",") if x.strip()]
    started = time.monotonic()
    res: dict[str, Any] = {
        "date": report.now(), "machine": report.machine(),
        "params": {"mode": "smoke" if args.smoke else "full", "pairs": args.pairs,
                   "manual": args.manual, "storm_n": ns, "storm_reps": args.storm_reps,
                   "concurrency": args.concurrency, "idle_seconds": args.idle_seconds,
                   "profile_n": args.profile_n, "records_n": args.records_n,
                   "storm_idle_s": args.storm_idle,
                   "lab": {"prefix": spec.prefix, "subnet": spec.subnet,
                           "state_dir": str(spec.state_dir)}},
        "phases_s": {},
    }
    res["footprint"] = {}
    compare_src: Path | None = args.compare_src
    patches: list[str] = [str(compare_src)] if compare_src else []
    made = None
    if args.try_proposals and not compare_src:
        made, patches = patched_copy(sorted(PROPOSALS.glob("*.patch")))
        compare_src = made if patches else None
    try:
        return _run(args, only, spec, ns, started, res, compare_src, patches)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def warmup_n(ns: list[int]) -> int:
    """As large as the largest storm, up to WARMUP_MOST agents: in the lab of 2026-12-02
    10:20 (results/storm-final-tree-1020.md, a warm-up of 50) the first 1,000-agent storm
    took 1.2-1.6 times the CPU per grant of the next three in every process (this host is
    a VM whose memory is backed at first touch: a likely cause)."""
    return min(WARMUP_MOST, max(ns))


def storm_pair(rep: int, runs: list[Any], cruns: list[Any], compare_src: Path | None,
               ) -> list[tuple[Path | None, list[Any]]]:
    """The storms of one repetition: the tree's, and the patched copy's right beside it in
    the same conditions, the two taking turns going first (the second of a pair ran
    slower here, whichever tree it was: 13.8 and 15.3 s against 11.7 and 11.8 s)."""
    pair: list[tuple[Path | None, list[Any]]] = [(None, runs)]
    if compare_src is not None:
        pair.append((compare_src, cruns))
    return pair if rep % 2 else pair[::-1]


def _run(args: argparse.Namespace, only: set[str], spec: BenchLabSpec, ns: list[int],
         started: float, res: dict[str, Any], compare_src: Path | None,
         patches: list[str]) -> int:
    fp = res["footprint"]
    lab_parts = only & {"join", "footprint", "checkin", "storm", "profile"}
    compare: dict[str, Any] = {"label": "proposals", "patches": patches, "src": str(compare_src)}
    if compare_src:
        check_variant(compare_src)
        res["compare"] = compare
    if lab_parts:
        with bench_lab(spec, log=say) as lab:
            if only & {"join", "footprint"}:
                t = time.monotonic()
                variants = (Variant("p", PATCHED_AGENT, variant_env(compare_src)),
                            ) if compare_src and "join" in only else ()
                say(f"join overhead: {args.pairs} pairs, {args.manual} manual approvals"
                    + (f"; the patched agent beside ({', '.join(patches)})" if variants else ""))
                raw, pis = run_join(lab, args.pairs, args.manual if "join" in only else 0,
                                    log=say, variants=variants)
                try:
                    if "join" in only:
                        res["join"] = report.summarize_join(raw)
                    if variants:
                        compare["join"] = report.summarize_join(raw, "p")
                    res["phases_s"]["join"] = time.monotonic() - t
                    if "footprint" in only:
                        t = time.monotonic()
                        agent_footprint(lab, pis, args.idle_seconds, fp)
                        res["phases_s"]["footprint_agent"] = time.monotonic() - t
                finally:
                    pis.unplug_all()
            if "checkin" in only:
                t = time.monotonic()
                say(f"check-in: a Pi where avahi runs, then {args.checkin_reps} check-ins")
                res["checkin"] = run_checkin(lab, args.checkin_reps, log=say)
                res["phases_s"]["checkin"] = time.monotonic() - t
            if "storm" in only:
                t = time.monotonic()
                runs, cruns = [], []
                # Warm-up, not counted: the first controller initialises swarm B and creates
                # its baseline services there (their containers start meanwhile); see
                # warmup_n for its size.
                warmup = storm_once(lab, warmup_n(ns), "warmup",
                                    args.concurrency, args.storm_deadline,
                                    managers=args.storm_managers, idle=args.storm_idle)
                res["storm_warmup"] = {k: warmup[k] for k in (
                    "n", "makespan_s", "latency_p99_s", "controller_cpu_ms_per_grant")}
                say(f"storm warm-up N={warmup['n']} (not counted): all after "
                    f"{warmup['makespan_s']:.2f}s, p99 {warmup['latency_p99_s']:.2f}s, "
                    f"{warmup['controller_cpu_ms_per_grant']:.1f} ms CPU/grant")
                for n in ns:
                    for rep in range(1, args.storm_reps + 1):
                        for src, into in storm_pair(rep, runs, cruns, compare_src):
                            label = f"{'after-' if src else ''}n{n}-r{rep}"
                            r = storm_once(lab, n, label, args.concurrency, args.storm_deadline,
                                           src=src, records_footprint=(n == args.records_n
                                                                       and src is None),
                                           managers=args.storm_managers, idle=args.storm_idle)
                            into.append(r)
                            say(f"storm N={n} run {rep}{' (proposals)' if src else ''}: "
                                f"{r['grants_per_s']:.1f} grants/s, all after "
                                f"{r['makespan_s']:.2f}s, p99 {r['latency_p99_s']:.2f}s, "
                                f"errors {r['error_count']}, not granted {r['not_granted']}, "
                                f"peak RSS {r['controller_peak_rss_mb']:.1f} MB, "
                                f"{r['controller_cpu_ms_per_grant']:.1f} ms CPU/grant, "
                                f"core {100 * r['controller_cpu_share']:.0f}% / client "
                                f"{100 * r['client_cpu_share']:.0f}% / other "
                                f"{r['other_cpu_cores']:.2f} cores, stolen "
                                f"{r['steal_cores']:.2f}")
                res["storm"] = report.summarize_storm(runs)
                floor_n = min(1000, max(ns))
                for key, per_write in (("storm_floor", 1), ("storm_floor_shared", SHARED)):
                    say(f"store floor: {floor_n} host documents, {per_write} per write, "
                        f"straight to the leader's daemon, {args.storm_reps} runs")
                    res[key] = summarize_floor(
                        [store_floor(lab, floor_n, f"{per_write}-r{rep}", per_write)
                         for rep in range(1, args.storm_reps + 1)])
                if cruns:
                    compare["storm"] = report.summarize_storm(cruns)
                restart = res["storm"].get(str(args.records_n), {}).get("restart_with_records")
                if restart:
                    after = [r["controller_rss_after_idle_mb"] for r in runs
                             if r["n"] == args.records_n]
                    worst = [max(a, b) for a, b in zip(
                        after, restart["rss_after_list_mb"]["runs"], strict=False)]
                    fp["records_n"] = args.records_n
                    fp["controller_rss_1000_mb"] = summary(worst)
                    fp["controller_rss_records_detail"] = {
                        "after_storm_idle_mb": summary(after), **restart}
                res["phases_s"]["storm"] = time.monotonic() - t
            if "profile" in only:
                t = time.monotonic()
                prof: dict[str, Any] = {"n": args.profile_n}
                if profiling.available() is None:
                    prof["error"] = "py-spy not installed"
                else:
                    out_dir = args.out / "profile"
                    out_dir.mkdir(parents=True, exist_ok=True)
                    for view, idle in (("cpu", False), ("wall", True)):
                        path = out_dir / f"storm-{args.profile_n}-{view}.txt"
                        r = storm_once(lab, args.profile_n, f"profile-{view}", args.concurrency,
                                       args.storm_deadline,
                                       during=lambda pid, p=path, i=idle: profiling.start(
                                           pid, p, i), idle=args.storm_idle)
                        prof[view] = r["profile"]
                        prof[view]["storm_under_profiler"] = {
                            k: r[k] for k in ("grants_per_s", "latency_p99_s", "error_count")}
                        say(f"profile ({view}): {r['profile'].get('samples', 0)} samples; top: "
                            + ", ".join(f"{c['name']} {100 * c['share']:.0f}%"
                                        for c in r["profile"].get("categories", [])[:4]))
                    if compare_src:
                        path = out_dir / f"storm-{args.profile_n}-cpu-proposals.txt"
                        r = storm_once(lab, args.profile_n, "profile-proposals",
                                       args.concurrency, args.storm_deadline, src=compare_src,
                                       during=lambda pid, p=path: profiling.start(pid, p, False),
                                       idle=args.storm_idle)
                        compare["profile_cpu"] = r["profile"]
                res["profile"] = prof
                res["phases_s"]["profile"] = time.monotonic() - t
    if "import" in only:
        t = time.monotonic()
        imp = footprint.import_time(args.import_reps)
        for key in ("interpreter_s", "import_agent_cli_s", "import_run_path_s"):
            imp[f"{key}_summary"] = summary(imp[key])
        fp["import"] = imp
        res["phases_s"]["import"] = time.monotonic() - t
    res["phases_s"]["total"] = time.monotonic() - started
    res["targets"] = report.targets(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(res, indent=1, sort_keys=False) + "\n")
    (args.out / "latest.md").write_text(report.markdown(res))
    say(f"done in {res['phases_s']['total']:.0f}s; wrote {args.out / 'latest.json'} and "
        f"{args.out / 'latest.md'}")
    for t in res["targets"]:
        say(f"  {'MET   ' if t['met'] else 'MISSED' if t['met'] is False else '  -   '} "
            f"{t['target']}: {t['shown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
