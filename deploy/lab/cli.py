"""`enroll-lab`: bring the simulated Pi cluster up and down, look inside it, change it.

    enroll-lab up [--config FILE] [--no-agents] [--no-controller]
    enroll-lab status [--json] | exec NAME -- CMD... | logs NAME [--agent|--docker|...]
    enroll-lab add NAME [--hardware-id ID] [--manager] [--token TOKEN | --lab-token]
                        [--no-agent] [--ip IP] [--model MODEL] [--arch ARCH] [--card DIR]
    enroll-lab kill NAME | reboot NAME [--hard] | exec NAME --os -- CMD...
    enroll-lab rootfs
    enroll-lab down

`add` plugs a freshly flashed Pi into the running lab (a killed Pi's name may be reused:
the replaced Pi); with `--card` the Pi boots that card under systemd (deploy/lab/cards.py).
`kill` pulls a Pi's plug. A thin shell over deploy.lab.lab.Lab, so the
CLI and the tests share one code path. Errors are one line on stderr and a non-zero exit
(`-v` adds the details, e.g. log tails).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import docker.errors
import requests

from controller.flash.bootfs import FlashError
from controller.flash.plan import check_token

from .config import KNOWN_ARCHES, ConfigError, load_cluster
from .lab import LOG_NAMES, Lab, LabError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "cluster.toml"
_EXPECTED = (LabError, ConfigError, OSError, subprocess.SubprocessError,
             docker.errors.DockerException, requests.RequestException, KeyError, ValueError)


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn failures into `enroll-lab: error: <first line>` and exit status 1; `-v` adds
    the rest of the message (log tails) and, for unexpected errors, the traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise  # usage errors: click's own message and exit status 2
        except Exception as exc:
            verbose = click.get_current_context().find_root().params.get("verbose")
            text = str(exc) if isinstance(exc, _EXPECTED) else f"{type(exc).__name__}: {exc}"
            lines = text.splitlines() or [type(exc).__name__]
            click.echo(f"enroll-lab: error: {lines[0]}", err=True)
            if verbose and not isinstance(exc, _EXPECTED):
                click.echo(traceback.format_exc(), err=True)
            elif verbose and len(lines) > 1:
                click.echo("\n".join(lines[1:]), err=True)
            sys.exit(1)
    return wrapper


def _lab(ctx: click.Context) -> Lab:
    params = ctx.find_root().params
    return Lab(state_dir=params.get("state_dir"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(path_type=Path), envvar="ENROLL_LAB_DIR",
              help="Lab state dir (default /var/lib/swarm-enroll-lab; env ENROLL_LAB_DIR).")
@click.option("-v", "--verbose", is_flag=True, help="Show error details (log tails).")
def main(state_dir: Path | None, verbose: bool) -> None:
    """Simulate a cluster of Raspberry Pis on this host (namespaces + one dockerd each).

    up builds it, add/kill plug Pis in and out while it runs, down removes it."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="Cluster file (TOML).")
@click.option("--no-agents", is_flag=True, help="Start no enroll-agent but the "
              "controller Pi's (which runs the controller).")
@click.option("--no-controller", is_flag=True, help="Do not start enroll-controller "
              "(implies --no-agents).")
@click.pass_context
@_one_line_errors
def up(ctx: click.Context, config_path: Path, no_agents: bool, no_controller: bool) -> None:
    """Build the lab (removing any previous one first)."""
    config = load_cluster(config_path)
    status = _lab(ctx).up(config, controller=not no_controller,
                          agents=not (no_agents or no_controller))
    _print_table(status)


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="Cluster file (TOML).")
@click.option("--timeout", type=float, default=240, show_default=True,
              help="Seconds to wait for each stage.")
@click.pass_context
@_one_line_errors
def demo(ctx: click.Context, config_path: Path, timeout: float) -> None:
    """Build the lab and watch it enroll itself (approving what waits for an admin)."""
    from .demo import epilogue, run_demo  # needs the controller package; only this does

    config = load_cluster(config_path)
    lab = _lab(ctx)
    run_demo(lab, config, say=click.echo, timeout=timeout)
    click.echo(epilogue(lab, config))


@main.command()
@click.argument("name")
@click.option("--hardware-id", metavar="ID", help="Its hardware id (default: a new random "
              "one, 00000000 + 8 hex digits).")
@click.option("--manager", is_flag=True, help="Record it as meant to be a manager "
              "(informational: the controller's rules decide the role).")
@click.option("--token", metavar="TOKEN", help="Bootstrap token for its agent.toml.")
@click.option("--lab-token", is_flag=True, help="Use the lab's own bootstrap token.")
@click.option("--no-agent", is_flag=True, help="Do not start enroll-agent on it.")
@click.option("--ip", metavar="IP", help="Its address (default: the next free one).")
@click.option("--model", help="Its model string (default: from --arch).")
@click.option("--arch", type=click.Choice(sorted(KNOWN_ARCHES)),
              help="Its architecture (default: from --model, else armv7l).")
@click.option("--card", type=click.Path(path_type=Path), metavar="DIR",
              help="Boot this card (a boot partition written by 'enrollctl flash' for NAME) "
              "under systemd instead of running a lab agent.")
@click.pass_context
@_one_line_errors
def add(ctx: click.Context, name: str, hardware_id: str | None, manager: bool,
        token: str | None, lab_token: bool, no_agent: bool, ip: str | None,
        model: str | None, arch: str | None, card: Path | None) -> None:
    """Plug a freshly flashed Pi NAME into the running lab.

    It gets its own namespace, address, dockerd and images, and (unless --no-agent) an
    agent with a new key, without a bootstrap token unless --token/--lab-token. NAME may
    be that of a killed Pi: its replacement (new hardware id, new key, blank disk).
    With --card it boots the card instead: a Debian 12 root (built once, cached) with
    the card at /boot/firmware, whose first boot installs and starts the agent."""
    if token is not None and lab_token:
        raise click.UsageError("--token and --lab-token exclude each other")
    if token is not None:
        try:
            token = check_token(token)
        except FlashError as exc:
            raise click.BadParameter(str(exc), param_hint="'--token'") from None
    if card is not None and (token is not None or lab_token or no_agent):
        raise click.UsageError("--card takes no --token, --lab-token or --no-agent: the "
                               "card holds the agent's settings")
    lab = _lab(ctx)
    lab.add_pi(name, hardware_id=hardware_id, manager=manager,
               token="lab" if lab_token else token, agent=not no_agent, model=model,
               arch=arch, ip=ip, card=card)
    _print_table(lab.status())


@main.command()
@click.argument("name")
@click.pass_context
@_one_line_errors
def kill(ctx: click.Context, name: str) -> None:
    """Pull Pi NAME's plug: its processes, namespace and veth go; its logs stay."""
    lab = _lab(ctx)
    lab.kill_pi(name)
    pi = lab.node(name)
    click.echo(f"{pi['name']} is unplugged (logs: {lab.pi_dir(pi['name'])})")


@main.command()
@click.argument("name")
@click.option("--hard", is_flag=True, help="Cut the power and power on again (no clean "
              "shutdown) instead of 'systemctl reboot'.")
@click.pass_context
@_one_line_errors
def reboot(ctx: click.Context, name: str, hard: bool) -> None:
    """Reboot card Pi NAME (its disk and its card stay)."""
    _lab(ctx).reboot_pi(name, hard=hard)
    click.echo(f"{name} is booting again")


@main.command()
@click.pass_context
@_one_line_errors
def rootfs(ctx: click.Context) -> None:
    """Build the card Pis' Debian root now (else the first card boot builds it)."""
    lab = _lab(ctx)
    started = time.monotonic()
    root = lab.rootfs()
    click.echo(f"{root} (ready in {time.monotonic() - started:.0f}s)")


@main.command()
@click.pass_context
@_one_line_errors
def down(ctx: click.Context) -> None:
    """Remove the lab: processes, daemons, mounts, namespaces, the host veth (the card
    Pis' cached Debian root stays)."""
    _lab(ctx).down()
    click.echo("lab is down")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@_one_line_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the Pis, their addresses, daemons and the controller."""
    st = _lab(ctx).status()
    if as_json:
        keys = ("controller_url", "controllers", "pin", "admin_token", "ca", "nodes")
        click.echo(json.dumps({k: st.get(k) for k in keys}, indent=2))
    elif not st["nodes"]:
        click.echo("no lab is up")
    else:
        _print_table(st)


@main.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--os", "in_os", is_flag=True, help="Inside the booted system of a card Pi "
              "(e.g. systemctl status enroll-agent).")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@_one_line_errors
def exec_(ctx: click.Context, name: str, in_os: bool, cmd: tuple[str, ...]) -> None:
    """Run CMD inside Pi NAME (its network and hostname, DOCKER_HOST set): exec NAME -- CMD"""
    lab = _lab(ctx)
    try:
        rc = (lab.os_exec if in_os else lab.exec)(name, list(cmd)).returncode
    except FileNotFoundError as exc:
        raise LabError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    sys.exit(rc)


@main.command()
@click.argument("name")
@click.option("--controller", is_flag=True, help="enroll-controller log.")
@click.option("--agent", is_flag=True, help="enroll-agent log.")
@click.option("--docker", is_flag=True, help="dockerd log.")
@click.option("--console", is_flag=True, help="A card Pi's console.")
@click.option("-n", "--tail", type=int, default=0, help="Only the last N lines.")
@click.pass_context
@_one_line_errors
def logs(ctx: click.Context, name: str, controller: bool, agent: bool, docker: bool,
         console: bool, tail: int) -> None:
    """Print a Pi's logs (all of them, or those chosen)."""
    lab = _lab(ctx)
    flags = {"controller": controller, "agent": agent, "docker": docker, "console": console}
    chosen = [kind for kind in LOG_NAMES if flags[kind]]
    pi_dir = lab.state_dir / name
    if not pi_dir.is_dir():
        raise LabError(f"no logs for {name!r} under {lab.state_dir}")
    paths = [pi_dir / LOG_NAMES[kind] for kind in chosen or LOG_NAMES]
    missing = [str(path) for path in paths if not path.exists()]
    if chosen and missing:
        raise LabError(f"{', '.join(missing)} does not exist")
    for path in (p for p in paths if p.exists()):
        if len(chosen) != 1:
            click.echo(f"==> {path} <==")
        lines = path.read_text(errors="replace").splitlines()
        click.echo("\n".join(lines[-tail:] if tail > 0 else lines))


def _print_table(st: dict[str, Any]) -> None:
    rows = [("NAME", "IP", "RUNNING", "PID", "AGENT", "DOCKER_HOST")]
    serving = {c["name"] for c in st.get("controllers", [])}
    for n in st["nodes"]:
        agent = "-" if not n["agent_pid"] else ("up" if n["agent_running"] else "dead")
        if n.get("card"):  # its agent runs in the booted card
            agent = "card" if n["booted"] else "card, off"
        name = n["name"] + (" *" if n["name"] in serving else "")
        running = "yes" if n["running"] else ("unplugged" if n.get("dead") else "NO")
        rows.append((name, n["ip"], running,
                     str(n["pid"] or "-"), agent, n["docker_host"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if st.get("controller_url"):
        urls = "  ".join(c["url"] for c in st.get("controllers", [])) or "none running"
        click.echo(f"\ncontrollers (*, one on every manager): {urls}")
        click.echo(f"CA pin: {st['pin']}   CA: {st['ca']}   admin token: enroll-lab status "
                   "--json")
