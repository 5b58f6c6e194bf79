"""`make demo`: the reference cluster builds itself; the admin approves the managers.

The same function backs the end-to-end test fixture, so the demo cannot rot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.adminclient import AdminClient
from controller.keeper import LABEL as KEEPER_LABEL
from controller.keeper import PROMOTED
from controller.rules import load_rules, match_rule, quorum_settings

from .config import ClusterConfig
from .lab import CONTROLLER_PORT, Lab, LabError

Say = Callable[[str], None]


def admin_client(lab: Lab, pi: str = "") -> AdminClient:
    """An admin client of the controller on `pi` (default: the first one that runs)."""
    status = lab.status()
    urls = {c["name"].lower(): c["url"] for c in status.get("controllers", [])}
    url = urls.get(pi.lower()) if pi else next(iter(urls.values()), None)
    if not url or not status.get("admin_token"):
        raise LabError(f"no controller runs{' on ' + pi if pi else ''} in the lab")
    return AdminClient(url, status["admin_token"], ca_file=Path(status["ca"]))


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; LabError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def swarm_nodes(lab: Lab, manager: str) -> list[dict[str, Any]]:
    """`docker node ls` of `manager`, as dicts."""
    client = lab.docker(manager)
    try:
        return [{
            "hostname": n.attrs.get("Description", {}).get("Hostname", ""),
            "state": n.attrs["Status"]["State"],
            "role": n.attrs["Spec"]["Role"],
            "availability": n.attrs["Spec"]["Availability"],
            "reachability": (n.attrs.get("ManagerStatus") or {}).get("Reachability", ""),
            "labels": n.attrs["Spec"].get("Labels", {}),
            "id": n.id,
        } for n in client.nodes.list()]
    finally:
        client.close()


def needs_admin(config: ClusterConfig) -> list[str]:
    """Pis that wait for an admin: a `manual` rule, or a `token` rule but no token."""
    assert config.rules is not None
    rules = load_rules(config.rules)
    names = []
    for pi in config.pis:
        rule = match_rule(rules, pi.name)
        if pi.name == config.controller or rule is None:
            continue
        if rule.approve == "manual" or (rule.approve == "token" and not pi.token):
            names.append(pi.name)
    return names


def ready_in_swarm(lab: Lab, config: ClusterConfig) -> dict[str, dict[str, Any]]:
    """The swarm's nodes by lower-case hostname, if every Pi of the config is Ready."""
    nodes = {n["hostname"].lower(): n
             for n in swarm_nodes(lab, config.controller or config.pis[0].name)}
    ready = all(nodes.get(p.name.lower(), {}).get("state") == "ready" for p in config.pis)
    return nodes if ready else {}


def run_demo(lab: Lab, config: ClusterConfig, say: Say = print,
             timeout: float = 240) -> dict[str, float]:
    """Bring the lab up, approve what waits for an admin, wait until every Pi is Ready and
    the baseline has converged; returns the seconds from the start to each milestone."""
    started = time.monotonic()
    times: dict[str, float] = {}
    say(f"Building the lab: {len(config.pis)} simulated Pis; the controller runs on "
        f"{config.controller} and initialises the swarm there.")
    lab.up(config)
    times["up"] = time.monotonic() - started
    say("Each agent announces its Pi over mDNS, finds the controller, checks its CA pin "
        "and asks to enroll; Pis with a bootstrap token are approved at once.")
    admin = admin_client(lab)
    waiting = {n.lower() for n in needs_admin(config)}

    def pending() -> list[dict[str, Any]]:
        nodes = [n for n in admin.nodes("pending") if n["hostname"].lower() in waiting]
        return nodes if len(nodes) == len(waiting) else []

    if waiting:
        for node in wait_for("the requests that need an admin", pending, timeout):
            say(f"Approving {node['hostname']} (role {node['role']}) through the admin API")
            admin.approve(node["id"], reason="approved by make demo")
    wait_for("every Pi Ready in the swarm", lambda: ready_in_swarm(lab, config), timeout)
    wanted = len(manager_names(config))
    quorum = quorum_settings(config.rules.read_text()) if config.rules else None
    if quorum is not None:
        say(f"The quorum keeper (managers = {quorum.managers} in the rules) promotes an "
            f"enrolled worker matching {quorum.promote!r} for each manager missing.")
        wanted = max(wanted, quorum.managers)
    managers = wait_for("the managers promoted and reachable",
                        lambda: settled_managers(lab, config, wanted), timeout)
    times["ready"] = time.monotonic() - started
    promoted = [n["hostname"] for n in managers if n["labels"].get(KEEPER_LABEL) == PROMOTED]
    by_keeper = f" ({', '.join(promoted)} promoted by the quorum keeper)" if promoted else ""
    say(f"All {len(config.pis)} Pis are Ready; managers: "
        f"{', '.join(n['hostname'] for n in managers)}{by_keeper}.")
    say("The controller reconciles the baseline services (viz, nginx) after each join; "
        "waiting until they have converged.")
    try:
        baseline = wait_for("the baseline services to converge",
                            lambda: baseline_converged(admin), timeout)
    except LabError as exc:  # say where each service stands: the next step to look at
        rows = [f"{s['name']}: {s['running_tasks']}/{s['desired_tasks']} running, in sync "
                f"{s['in_sync']}, update {s['update']['state'] or '-'}, error "
                f"{s['error'] or s['task_error'] or '-'}" for s in admin.baseline()["services"]]
        raise LabError(f"{exc}; {'; '.join(rows)}") from None
    times["converged"] = time.monotonic() - started
    for svc in baseline["services"]:
        say(f"{svc['name']}: {svc['running_tasks']}/{svc['desired_tasks']} tasks running on "
            f"{', '.join(svc['nodes']) or 'no node'}")
    return times


def baseline_converged(admin: AdminClient) -> dict[str, Any] | None:
    """GET /v1/baseline once every service runs as the file says for today's nodes."""
    status = admin.baseline()
    return status if status["converged"] else None


def baseline_urls(lab: Lab, status: dict[str, Any]) -> dict[str, list[str]]:
    """Where each baseline service answers from inside the lab: host-mode ports on the
    nodes running a task, ingress ports on every node."""
    ips = {n["name"].lower(): n["ip"] for n in lab.status()["nodes"] if n["running"]}
    urls: dict[str, list[str]] = {}
    for svc in status["services"]:
        for port in svc.get("ports", []):
            if port["protocol"] != "tcp":
                continue
            hosts = svc["nodes"] if port["mode"] == "host" else sorted(ips)
            urls.setdefault(svc["name"], []).extend(
                f"http://{ips[h.lower()]}:{port['published']}/" for h in hosts
                if h.lower() in ips)
    return urls


def settled_managers(lab: Lab, config: ClusterConfig, wanted: int) -> list[dict[str, Any]]:
    """The swarm's managers by hostname, once the rules' managers and `wanted` managers
    in all are reachable (and no more: the keeper demotes one it promoted too many)."""
    nodes = ready_in_swarm(lab, config)
    managers = sorted((n for n in nodes.values() if n["role"] == "manager"),
                      key=lambda n: n["hostname"].lower())
    rules = all(nodes.get(m.lower(), {}).get("role") == "manager"
                for m in manager_names(config))
    reachable = all(n["reachability"] == "reachable" for n in managers)
    return managers if rules and reachable and len(managers) == wanted else []


def manager_names(config: ClusterConfig) -> list[str]:
    """The controller's Pi and every Pi whose rule says manager."""
    assert config.rules is not None
    rules = load_rules(config.rules)
    return [p.name for p in config.pis if p.name == config.controller
            or ((rule := match_rule(rules, p.name)) is not None and rule.role == "manager")]


def epilogue(lab: Lab, config: ClusterConfig) -> str:
    """What the demo leaves on screen: the swarm as Docker sees it, and what to do next."""
    status = lab.status()
    manager = config.controller or config.pis[0].name
    node_ls = lab.exec(manager, ["/usr/bin/docker", "node", "ls"], capture_output=True,
                       timeout=30)
    ips = {n["name"].lower(): n["ip"] for n in status["nodes"]}
    urls = ",".join(f"https://{ips[n['hostname'].lower()]}:{CONTROLLER_PORT}"
                    for n in swarm_nodes(lab, manager)
                    if n["role"] == "manager" and n["hostname"].lower() in ips)
    return "\n".join([
        f"docker node ls on {manager}:",
        node_ls.stdout.rstrip() or node_ls.stderr.rstrip(),
        "",
        f"Controllers, one on every manager: {urls.replace(',', ', ')}  (CA pin "
        f"{status['pin']})",
        "Use enrollctl from this shell (the admin token is in `enroll-lab status --json`):",
        f"  export ENROLLCTL_URL={urls} ENROLLCTL_CA_FILE={status['ca']}",
        "  export ENROLLCTL_TOKEN=$(.venv/bin/enroll-lab status --json | "
        "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"admin_token\"])')",
        "  .venv/bin/enrollctl nodes",
        "  .venv/bin/enrollctl audit",
        f"Look inside a Pi:  .venv/bin/enroll-lab exec {config.pis[-1].name} -- "
        "/usr/bin/docker info",
        *_baseline_lines(lab, config),
        "Tear it all down: make demo-down",
    ])


def _baseline_lines(lab: Lab, config: ClusterConfig) -> list[str]:
    """The baseline services' URLs and a command to try one, for the epilogue."""
    try:
        urls = baseline_urls(lab, admin_client(lab).baseline())
    except Exception as exc:  # the epilogue must not fail the demo
        return [f"(baseline services: cannot ask the controller: {exc})"]
    if not urls:
        return []
    client = config.pis[-1].name
    lines = ["", "Baseline services answer inside the lab (host-mode ports: on the nodes that "
             "run a task):"]
    lines += [f"  {name:<6} {'  '.join(found)}" for name, found in urls.items()]
    first = next(iter(urls.values()))[0]
    lines += [f"Try one from a Pi:  .venv/bin/enroll-lab exec {client} -- busybox wget -qO- "
              f"{first}",
              "  .venv/bin/enrollctl baseline   # desired vs running tasks, last reconcile",
              "  .venv/bin/enrollctl cluster    # managers, workers, leader, Raft fault "
              "tolerance, the quorum keeper"]
    return lines
