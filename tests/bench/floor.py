"""The store's floor: Docker's own config writes on the storm's swarm, with no controller.

Each Pi's enrollment writes its hostname's document to the swarm's Raft store. Writing N
configs of a real host document's size (one the storm left) straight to the Raft
leader's daemon, from as many threads as the controller serves requests with, shows what
the store alone takes on this host, and what each manager's dockerd spends on one write:
what a storm with one write per Pi would cost at least. The same N documents written
`per_write` to a config (one label holding that many) show what sharing writes saves
(Raft's cost is per proposal, nearly whatever its size), as shelves do
(controller.state.shelves). The configs carry a label of their own (never the state's), and are
removed afterwards.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.dockerapi import DockerAPI
from controller.state.shelves import DOC_PREFIX
from controller.state.swarm import DOC_LABEL, KEY_LABEL, STATE_LABEL
from deploy.lab.lab import Lab, LabError

from .benchlab import FOLLOWER_PIS, STORM_PI, cpu_by_process, processes_cpu, settle_host
from .stats import summary

THREADS = 8  # the controller's server threads (controller/server.py: make_server)
SHARED = 8  # documents per write in the shared variant: as many as requests in flight
FLOOR_LABEL = "swarm-enroll-bench.floor"


def host_document(api: DockerAPI) -> str:
    """The text of one host document the storm wrote: the size every write carries."""
    for config in api.configs(filters={"label": [STATE_LABEL]}):
        labels = config["Spec"].get("Labels") or {}
        if labels.get(KEY_LABEL, "").startswith("host/"):
            return str(labels[DOC_LABEL])
        for label, text in labels.items():  # on a shelf
            if label.startswith(DOC_PREFIX + "host/"):
                return str(text)
    raise LabError("no host document in the storm's swarm: run a storm first")


def store_floor(lab: Lab, n: int, label: str, per_write: int = 1) -> dict[str, Any]:
    """N host documents written by THREADS threads to the storm Pi's daemon (the Raft
    leader), `per_write` in each config."""
    api = DockerAPI(lab.docker_host(STORM_PI))
    doc = host_document(api)
    text = doc if per_write == 1 else json.dumps([doc] * per_write)
    names = [f"bench-floor-{label}-{i}" for i in range(n // per_write)]  # not the state's

    def write(name: str) -> None:
        api.create_config(name, b"floor", {FLOOR_LABEL: "1", DOC_LABEL: text})

    settle_host()
    places = (lab.state_dir, lab.run_base)
    before, t0 = processes_cpu(places), time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(write, names))
    elapsed = time.monotonic() - t0
    cores = cpu_by_process(before, [processes_cpu(places)], elapsed)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(api.remove_config, names))
    managers = {f"dockerd ({pi})" for pi in (STORM_PI, *FOLLOWER_PIS)}
    done = len(names) * per_write
    daemons = {name: 1000 * c * elapsed / done for name, c in cores.items() if name in managers}
    return {"n": done, "per_write": per_write, "threads": THREADS,
            "doc_bytes": len(doc.encode()), "elapsed_s": elapsed,
            "docs_per_s": done / elapsed, "dockerd_ms_per_doc": daemons,
            "dockerd_ms_per_doc_all": sum(daemons.values()),
            "host_cores_busy": sum(cores.values())}


def summarize_floor(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({name for r in runs for name in r["dockerd_ms_per_doc"]})
    return {**{k: runs[0][k] for k in ("n", "per_write", "threads", "doc_bytes")},
            **{k: summary([r[k] for r in runs])
               for k in ("elapsed_s", "docs_per_s", "dockerd_ms_per_doc_all",
                         "host_cores_busy")},
            "dockerd_ms_per_doc": {name: summary([r["dockerd_ms_per_doc"].get(name, 0.0)
                                                  for r in runs]) for name in names},
            "runs": runs}
