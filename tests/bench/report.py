"""Turning raw runs into results/latest.json: summaries, targets met or missed, Markdown."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .stats import summary

STORM_KEYS = ("grants_per_s", "makespan_s", "latency_p50_s", "latency_p95_s", "latency_p99_s",
              "since_t0_p99_s", "error_count", "not_granted", "controller_peak_rss_mb",
              "controller_rss_after_idle_mb", "controller_cpu_ms_per_grant",
              "controller_cpu_share", "client_cpu_share", "other_cpu_cores",
              "store_write_p50_ms", "store_write_p95_ms", "follower_peak_rss_mb",
              "follower_rss_after_idle_mb", "follower_cpu_ms_per_grant",
              "connections_per_agent", "steal_cores")
JOIN_KEYS = ("total_s", "start_to_first_log_s", "start_to_found_s", "start_to_docker_s",
             "start_to_approved_s", "start_to_joining_s", "first_log_to_found_s",
             "found_to_joining_s", "approved_to_joining_s", "joining_to_ready_s")
BARE_KEYS = ("total_s", "start_to_docker_s", "cli_s", "cli_to_ready_s")


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        dockerd = subprocess.run(["dockerd", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except OSError:
        dockerd = ""
    return {"arch": platform.machine(), "nproc": os.cpu_count(), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "dockerd": dockerd,
            "mem_total_mb": int(Path("/proc/meminfo").read_text().split()[1]) // 1024}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def summarize_join(raw: dict[str, Any], variant: str = "") -> dict[str, Any]:
    """Summaries of the tree's agent, or (`variant`) of that variant's agent per pair."""
    pairs = raw["pairs"]
    if variant:
        pairs = [{**p["variants"][variant], "bare": p["bare"]} for p in pairs]
    out: dict[str, Any] = {
        "agent": {k: summary([p["agent"][k] for p in pairs]) for k in JOIN_KEYS},
        "bare_total_s": summary([p["bare"]["total_s"] for p in pairs]),
        "bare": {k: summary([p["bare"][k] for p in pairs]) for k in BARE_KEYS},
        "ratio": summary([p["ratio"] for p in pairs]),
    }
    if not variant:
        out["approval_to_ready_s"] = summary([m["approval_to_ready_s"] for m in raw["manual"]])
        out["raw"] = raw
    return out


def summarize_storm(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_n: dict[str, Any] = {}
    for n in sorted({r["n"] for r in runs}):
        rs = [r for r in runs if r["n"] == n]
        entry = {k: summary([r.get(k) for r in rs]) for k in STORM_KEYS}
        entry["concurrency"] = rs[0]["concurrency"]
        entry["managers"] = rs[0].get("managers", 1)
        entry["errors_by_kind"] = [r["errors"] for r in rs]
        entry["grants_bad"] = sum(r["grants_bad"] for r in rs)
        restarts = [r["restart_with_records"] for r in rs if "restart_with_records" in r]
        if restarts:
            entry["restart_with_records"] = {
                k: summary([x[k] for x in restarts])
                for k in ("rss_idle_mb", "rss_after_list_mb", "peak_rss_mb")}
            entry["restart_with_records"]["records"] = [x["records"] for x in restarts]
        entry.update(_by_process(rs))
        entry["runs"] = [{k: v for k, v in r.items() if k != "profile"} for r in rs]
        by_n[str(n)] = entry
    return by_n


def _by_process(runs: list[dict[str, Any]], least_ms: float = 0.1) -> dict[str, Any]:
    """Each process's CPU per grant over the runs (the busiest first, those above
    `least_ms`), and the cores all processes kept busy while the controller was."""
    per_run = []
    for r in runs:
        cpu = r.get("cpu_by_process")
        if cpu and r["granted"]:
            scale = 1000 * cpu["window_s"] / r["granted"]
            per_run.append({name: cores * scale for name, cores in cpu["cores"].items()})
    if not per_run:
        return {}
    names = {name for ms in per_run for name in ms}
    by_name = {name: summary([ms.get(name, 0.0) for ms in per_run]) for name in names}
    shown = sorted((n for n in names if (by_name[n]["median"] or 0) >= least_ms),
                   key=lambda n: -by_name[n]["median"])
    return {"cpu_ms_per_grant_by_process": {n: by_name[n] for n in shown},
            "cpu_ms_per_grant_all": summary([sum(ms.values()) for ms in per_run]),
            "host_cores_busy": summary([sum(r["cpu_by_process"]["cores"].values())
                                        for r in runs if r.get("cpu_by_process")])}


def _med(s: dict[str, Any] | None) -> float | None:
    return None if not s else s.get("median")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured figure; `met` is None where it was not measured."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, ok: bool | None, shown: str, note: str = "") -> None:
        out.append({"target": name, "measured": value, "shown": shown,
                    "met": None if value is None else ok, "note": note})

    join = res.get("join")
    if join:
        r = _med(join["ratio"])
        add("join: dockerd + agent started together -> Ready <= 1.3 x dockerd start -> bare "
            "join -> Ready (median ratio)", r, r is not None and r <= 1.3,
            f"{r:.2f}" if r is not None else "-")
        f = _med(join["agent"]["start_to_found_s"])
        add("controller found over mDNS <= 1.5 s (median, from agent start)", f,
            f is not None and f <= 1.5, f"{f:.2f} s" if f is not None else "-")
    storm = res.get("storm", {})
    if "1000" in storm:
        s = storm["1000"]
        mk, p99 = s["makespan_s"]["max"], s["latency_p99_s"]["max"]
        errs, missing = s["error_count"]["max"], s["not_granted"]["max"]
        add("1,000 agents all granted within 10 s (worst run)", mk,
            mk <= 10 and missing == 0, f"{mk:.1f} s")
        add("1,000 agents: p99 request->grant < 3 s (worst run)", p99, p99 < 3,
            f"{p99:.2f} s", f"at most {s['concurrency']} agents in flight")
        add("1,000 agents: zero errors", errs, errs == 0 and missing == 0, f"{errs:.0f}")
    if "5000" in storm:
        s = storm["5000"]
        errs, missing = s["error_count"]["max"], s["not_granted"]["max"]
        add("5,000 agents: zero errors", errs, errs == 0 and missing == 0,
            f"{errs:.0f} errors, {missing:.0f} not granted")
    fp = res.get("footprint", {})
    if "agent_rss_mb" in fp:
        v = fp["agent_rss_mb"]["max"]
        add("agent idle RSS without avahi <= 32 MB (worst agent, its processes summed)", v,
            v <= 32, f"{v:.1f} MB")
        c = fp["agent_cpu_percent"]["max"]
        add("agent idle CPU < 0.5 % of a core (worst agent)", c, c < 0.5, f"{c:.2f} %")
    ci = res.get("checkin")
    if ci:
        v = ci["resident_mb"]
        add("with avahi: agent resident between check-ins = 0 MB (sum of its processes)", v,
            ci["agent_exit"] == 0 and v == 0, f"{v:.1f} MB",
            f"{ci['resident_processes']} process(es) left; the agent exited with "
            f"{ci['agent_exit']}")
        c = ci["cpu_s"]["max"]
        add("check-in (`enroll-agent check`) <= 2 s CPU (worst run)", c,
            c is not None and c <= 2 and set(ci["statuses"]) == {0},
            f"{c:.2f} s" if c is not None else "-",
            f"exit statuses {ci['statuses']}")
    if "controller_rss_1000_mb" in fp and fp.get("records_n") == 1000:
        v = fp["controller_rss_1000_mb"]["max"]
        add("controller RSS <= 64 MB idle with 1,000 records (worst case)", v, v <= 64,
            f"{v:.1f} MB")
    return out


def _fmt(s: dict[str, Any] | None, unit: str = "", digits: int = 2) -> tuple[str, str, str]:
    if not s or s.get("median") is None:
        return "-", "-", "-"
    return tuple(f"{s[k]:.{digits}f}{unit}" for k in ("median", "min", "max"))  # type: ignore


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"Measured {res['date']} on {m['arch']}, {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['mem_total_mb'] // 1024} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"{m['dockerd']}; `make bench` ({res['params']['mode']}). Each figure: median (min-max) "
        "over the runs shown; the controller pinned to one core with `taskset`.",
        "",
        "| benchmark | figure | median | min | max | runs |",
        "|---|---|---|---|---|---|",
    ]

    def row(bench: str, figure: str, s: dict[str, Any] | None, unit: str = " s",
            digits: int = 2) -> None:
        med, lo, hi = _fmt(s, unit, digits)
        lines.append(f"| {bench} | {figure} | {med} | {lo} | {hi} | {(s or {}).get('n', 0)} |")

    join = res.get("join")
    if join:
        a = join["agent"]
        b = join.get("bare", {})
        row("join", "dockerd + agent started together -> node Ready", a["total_s"])
        row("join", "dockerd started -> bare `docker swarm join` -> Ready",
            join["bare_total_s"])
        row("join", "ratio agent / bare (pairwise)", join["ratio"], "")
        row("join", "agent side, from t0: first log line (Python start-up)",
            a["start_to_first_log_s"])
        row("join", "agent side, from t0: controller found (mDNS)", a["start_to_found_s"])
        row("join", "agent side, from t0: Docker answers", a["start_to_docker_s"])
        row("join", "agent side, from t0: grant in hand (pin, nonce, request)",
            a["start_to_approved_s"])
        row("join", "agent side, from t0: `docker swarm join` starts (grant checked)",
            a["start_to_joining_s"])
        row("join", "agent side: join starts -> Ready", a["joining_to_ready_s"])
        row("join", "bare side, from t0: Docker answers", b.get("start_to_docker_s"))
        row("join", "bare side: `docker swarm join` CLI", b.get("cli_s"))
        row("join", "bare side: CLI done -> Ready", b.get("cli_to_ready_s"))
        row("join", "approval (manual rule) -> Ready", join["approval_to_ready_s"])
    for n, s in res.get("storm", {}).items():
        managers = s.get("managers", 1)
        b = f"storm N={int(n):,} (C={s['concurrency']}, {managers} manager" + \
            ("s)" if managers > 1 else ")")
        row(b, "grants/s", s["grants_per_s"], "", 1)
        row(b, "all granted after", s["makespan_s"])
        row(b, "request->grant p50", s["latency_p50_s"])
        row(b, "request->grant p95", s["latency_p95_s"])
        row(b, "request->grant p99", s["latency_p99_s"])
        row(b, "t0->grant p99 (fleet view)", s["since_t0_p99_s"])
        row(b, "errors / not granted", s["error_count"], "", 0)
        if s.get("connections_per_agent", {}).get("median") is not None:
            row(b, "TLS connections per agent (handshakes on both sides)",
                s["connections_per_agent"], "", 2)
        row(b, "controller CPU per grant", s["controller_cpu_ms_per_grant"], " ms", 1)
        row(b, "controller peak RSS (VmHWM)", s["controller_peak_rss_mb"], " MB", 1)
        row(b, "controller RSS idle after it", s["controller_rss_after_idle_mb"], " MB", 1)
        if s.get("follower_peak_rss_mb", {}).get("median") is not None:
            row(b, "other managers' controllers: peak RSS (worst)",
                s["follower_peak_rss_mb"], " MB", 1)
            row(b, "other managers' controllers: RSS idle after it (worst)",
                s["follower_rss_after_idle_mb"], " MB", 1)
            row(b, "other managers' controllers: CPU per grant (each)",
                s["follower_cpu_ms_per_grant"], " ms", 1)
        row(b, "state store write (CAS) p50", s["store_write_p50_ms"], " ms", 1)
        row(b, "state store write (CAS) p95", s["store_write_p95_ms"], " ms", 1)
        row(b, "controller core busy", s["controller_cpu_share"], "", 2)
        row(b, "load generator core busy", s["client_cpu_share"], "", 2)
        row(b, "other processes during it (cores; noise)", s["other_cpu_cores"], "", 2)
        row(b, "stolen by the hypervisor during it (cores)", s["steal_cores"], "", 2)
        if s.get("host_cores_busy"):
            row(b, "all processes: cores busy while the controller was", s["host_cores_busy"],
                "", 2)
            row(b, "all processes: CPU per grant", s["cpu_ms_per_grant_all"], " ms", 1)
            for name, ms in s["cpu_ms_per_grant_by_process"].items():
                row(b, f"CPU per grant: {name}", ms, " ms", 1)
    warmup = res.get("storm_warmup")
    if warmup:
        b = f"storm warm-up N={warmup['n']:,}, not counted (the lab's first storm)"
        row(b, "all granted after", summary([warmup["makespan_s"]]))
        row(b, "request->grant p99", summary([warmup["latency_p99_s"]]))
        row(b, "controller CPU per grant", summary([warmup["controller_cpu_ms_per_grant"]]),
            " ms", 1)
    for floor in (res.get("storm_floor"), res.get("storm_floor_shared")):
        if not floor:
            continue
        b = (f"store floor: {floor['n']:,} host documents of {floor['doc_bytes']:,} B, "
             f"{floor['per_write']} per write, no controller ({floor['threads']} threads)")
        row(b, "all written after", floor["elapsed_s"])
        row(b, "host documents/s", floor["docs_per_s"], "", 1)
        row(b, "managers' dockerd CPU per host document (all)",
            floor["dockerd_ms_per_doc_all"], " ms", 2)
        for name, ms in floor["dockerd_ms_per_doc"].items():
            row(b, f"CPU per host document: {name}", ms, " ms", 2)
        row(b, "all processes: cores busy", floor["host_cores_busy"], "", 2)
    fp = res.get("footprint", {})
    if "agent_rss_mb" in fp:
        row(f"footprint (agent idle {fp['agent_window_s']:.0f} s)", "agent RSS",
            fp["agent_rss_mb"], " MB", 1)
        row(f"footprint (agent idle {fp['agent_window_s']:.0f} s)", "agent CPU",
            fp["agent_cpu_percent"], " %", 2)
    ci = res.get("checkin")
    if ci:
        row("check-in", "CPU of one `enroll-agent check` (utime+stime, children included)",
            ci["cpu_s"])
        row("check-in", "CPU of enroll-controller-ensure's manager test (docker CLI)",
            ci.get("ensure_test_cpu_s"))
        lines.append(f"| check-in | agent processes left after joining where avahi runs | "
                     f"{ci['resident_processes']} ({ci['resident_mb']:.1f} MB) | | | 1 |")
    if "controller_rss_1000_mb" in fp:
        row("footprint", f"controller RSS with {fp['records_n']:,} records (idle)",
            fp["controller_rss_1000_mb"], " MB", 1)
    if "import" in fp:
        imp = fp["import"]
        row("footprint", "agent import time (`enroll-agent run` imports, wall)",
            imp["import_run_path_s_summary"])
        row("footprint", "`import agent.cli` (wall)", imp["import_agent_cli_s_summary"])
        row("footprint", "bare interpreter (wall)", imp["interpreter_s_summary"])
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in res.get("targets", []):
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {t['shown']}{note} | {met} |")
    comp = res.get("compare")
    if comp and (comp.get("storm") or comp.get("join")):
        lines += ["", f"Proposed fixes (tests/bench/proposals: {', '.join(comp['patches'])}), "
                  "measured on a patched copy in the same lab and the same run (not applied "
                  "to the tree):", "",
                  "| benchmark | figure | before (median) | after (median) |", "|---|---|---|---|"]
        cj, bj = comp.get("join"), res.get("join")
        if cj and bj:
            for key, label in (("total_s", "agent start -> Ready"),
                               ("start_to_found_s", "agent start -> controller found"),
                               ("found_to_joining_s", "found -> join starts")):
                lines.append(f"| join | {label} | {bj['agent'][key]['median']:.2f} s | "
                             f"{cj['agent'][key]['median']:.2f} s |")
            lines.append(f"| join | ratio agent / bare | {bj['ratio']['median']:.2f} | "
                         f"{cj['ratio']['median']:.2f} |")
        for n, after in comp.get("storm", {}).items():
            before = res.get("storm", {}).get(n)
            if not before:
                continue
            for key, label, unit in (("grants_per_s", "grants/s", ""),
                                     ("makespan_s", "all granted after", " s"),
                                     ("latency_p99_s", "request->grant p99", " s"),
                                     ("error_count", "errors", ""),
                                     ("controller_cpu_share", "controller core busy", ""),
                                     ("controller_cpu_ms_per_grant", "CPU per grant", " ms"),
                                     ("connections_per_agent", "TLS connections per agent",
                                      ""),
                                     ("controller_peak_rss_mb", "peak RSS", " MB")):
                if before[key]["median"] is None or after[key]["median"] is None:
                    continue
                lines.append(f"| storm N={int(n):,} | {label} | {before[key]['median']:.2f}{unit}"
                             f" | {after[key]['median']:.2f}{unit} |")
    notes = findings(res)
    if notes:
        lines += ["", "Why (computed from the figures above):", ""]
        lines += [f"- {n}" for n in notes]
    prof = res.get("profile")
    views = []
    if prof:
        views += [(f"the N={prof['n']:,} storm's controller, {v} view", prof.get(v))
                  for v in ("cpu", "wall")]
    if comp and comp.get("profile_cpu") and prof:
        views.append((f"the N={prof['n']:,} storm's controller with the proposals, cpu view",
                      comp["profile_cpu"]))
    for title, p in views:
        if not p or "categories" not in p:
            continue
        busy = [c for c in p["categories"] if not c["name"].startswith("idle:")]
        total = sum(c["samples"] for c in busy) or 1
        lines += ["", f"Profile of {title} ({p['samples']:,} py-spy samples; shares of the "
                  f"{total:,} samples not waiting for work):", "",
                  "| where | share |", "|---|---|"]
        lines += [f"| {c['name']} | {100 * c['samples'] / total:.1f} % |" for c in busy[:10]]
    return "\n".join(lines) + "\n"


def findings(res: dict[str, Any]) -> list[str]:
    """Plain-words explanations derived from the measured figures (no hand-written numbers)."""
    out = []
    join = res.get("join")
    if join and join["agent"]["total_s"]["median"]:
        a = {k: (join["agent"][k]["median"] or 0.0) for k in JOIN_KEYS}
        b = {k: ((join.get("bare", {}).get(k) or {}).get("median") or 0.0) for k in BARE_KEYS}
        after = a["total_s"] - a["start_to_docker_s"]
        out.append(
            f"Join: both sides start Docker at t0 (a Pi's boot). Docker answered after "
            f"{a['start_to_docker_s']:.2f} s on the agent's side, "
            f"{b['start_to_docker_s']:.2f} s on the bare one. Meanwhile the agent started "
            f"Python ({a['start_to_first_log_s']:.2f} s) and found the controller "
            f"({a['start_to_found_s']:.2f} s); its request waits for Docker's swarm state, so "
            f"its grant came at {a['start_to_approved_s']:.2f} s, the join started at "
            f"{a['start_to_joining_s']:.2f} s and took {a['joining_to_ready_s']:.2f} s to "
            f"Ready: {after:.2f} s after Docker answered, against "
            f"{b['total_s'] - b['start_to_docker_s']:.2f} s for the bare join (its CLI "
            f"{b['cli_s']:.2f} s). Total {a['total_s']:.2f} s against {b['total_s']:.2f} s.")
    cj = res.get("compare", {}).get("join")
    if join and cj:
        out.append(f"Join with the proposals: found -> join starts "
                   f"{cj['agent']['found_to_joining_s']['median']:.2f} s instead of "
                   f"{join['agent']['found_to_joining_s']['median']:.2f} s; what is left is "
                   "mostly the interpreter and imports.")
    storms = [("", res.get("storm", {}))]
    if res.get("compare", {}).get("storm"):
        storms.append((" with the proposals", res["compare"]["storm"]))
    for variant, runs in storms:
        for n, s in runs.items():
            busy, client = s["controller_cpu_share"]["median"], s["client_cpu_share"]["median"]
            if busy is None or client is None:
                continue
            host = (s.get("host_cores_busy") or {}).get("median")
            if host is not None and host >= 0.85 * (os.cpu_count() or 1):
                why = (f"yet all processes together kept {host:.2f} of the host's "
                       f"{os.cpu_count()} cores busy: the host's CPU is the limit (see CPU per "
                       "grant by process).")
            elif busy < 0.8 and client < 0.8:
                why = ("neither is saturated, so requests wait on serialisation, not on CPU "
                       "(see the profile).")
            elif busy >= 0.8 and client >= 0.8:
                why = ("both are near their limit: the controller's figure is close to its "
                       "ceiling on this core, if anything understated.")
            elif busy >= 0.8:
                why = "the controller's core is the limit."
            else:
                why = "the load generator is the limit: the figure is a lower bound."
            out.append(f"Storm N={int(n):,}{variant}: the controller kept its core "
                       f"{100 * busy:.0f} % busy and the load generator its own "
                       f"{100 * client:.0f} %: {why}")
    floor, shared = res.get("storm_floor"), res.get("storm_floor_shared")
    if floor and floor["elapsed_s"]["median"] is not None:
        out.append(
            f"Store floor: Docker alone took {floor['elapsed_s']['median']:.2f} s to write "
            f"{floor['n']:,} host documents one per write, its managers' daemons "
            f"{floor['dockerd_ms_per_doc_all']['median']:.1f} ms of CPU per document. A "
            "storm makes at least one such write per Pi, and on this host shares the same "
            "cores with the controllers and the load generator.")
    if shared and shared["elapsed_s"]["median"] is not None:
        out.append(
            f"With {shared['per_write']} host documents per write: "
            f"{shared['elapsed_s']['median']:.2f} s, "
            f"{shared['dockerd_ms_per_doc_all']['median']:.2f} ms of the daemons' CPU per "
            "document: Raft's cost is per proposal, nearly whatever its size.")
    fp = res.get("footprint", {})
    if "agent_rss_anon_mb" in fp:
        out.append(f"Agent RSS: {fp['agent_rss_anon_mb']['median']:.1f} MB anonymous + "
                   f"{fp['agent_rss_file_mb']['median']:.1f} MB file-backed (shared libraries: "
                   "OpenSSL via the ssl module, zeroconf's compiled modules). Once joined the "
                   "agent execs itself afresh as `python -m agent.daemon`, so cryptography "
                   "and joserfc (the pin check, the grant) and click (the CLI) are not "
                   "resident; see import_rss for each library's share.")
    return out
