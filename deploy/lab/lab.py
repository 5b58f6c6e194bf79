"""The simulated Pi cluster as one object: the single code path of the CLI and the tests.

`up` builds the LAN, one namespace + dockerd per Pi, the stand-in images, then the
controller and agents; `down` removes all of it, from state.json when it is there and by
name prefix, namespace membership and cgroup when it is not, so a crash mid-way never
leaves daemons, namespaces, mounts or the host veth behind.

While the lab is up, `add_pi` plugs a freshly flashed Pi into the LAN (new namespace,
dockerd, images, agent with a new key), `kill_pi` pulls a Pi's plug (processes, namespace
and veth go; its logs and disk stay until it is replaced or the lab goes down), and
`restart_agent` restarts one agent with the same config and key.

A Pi may boot a card that `enrollctl flash` wrote instead of running a lab agent
(`add_pi(card=...)`, `card =` in the cluster file): see cards.py. `reboot_pi` reboots it
(or cuts its power and powers it on again) and `os_exec` runs a command in its booted
system.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import requests

from agent import avahi as os_avahi

from . import avahi, cards, cgroups, dockerd, images, mounts, netns, procs, rootfs
from .config import (
    CARD_MODEL,
    FIRST_HOST,
    KNOWN_ARCHES,
    MAX_NAME,
    RESERVED_NAMES,
    ClusterConfig,
    PiSpec,
    host_arch,
    valid_hardware_id,
    valid_hostname,
    valid_machine_id,
)
from .locks import locked

DEFAULT_STATE_DIR = Path("/var/lib/swarm-enroll-lab")
DEFAULT_PREFIX = "selab-"
STATE_VERSION = 1
LOG_NAMES = {"docker": "dockerd.log", "controller": "controller.log", "agent": "agent.log",
             "console": "console.log"}
REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "umount", "dockerd", "containerd", "runc")
# logs (and the rotated logs of replaced Pis: agent.log.1, ...) survive down and kill_pi
_LOG_FILE = re.compile(r"\.log(\.\d+)?$")
_TOML_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# what add_pi calls a Pi when only its architecture is given
DEFAULT_MODELS = {
    "armv6l": "Raspberry Pi Zero W Rev 1.1",
    "armv7l": "Raspberry Pi 3 Model B Rev 1.2",
    "aarch64": "Raspberry Pi 4 Model B Rev 1.4",
    "x86_64": "Generic x86_64 board",
}
AGENT_STARTUP_CHECK = 1.0  # seconds: an agent that cannot even start says so at once
CONTROLLER_PORT = 8443  # every lab manager's controller serves there, in its own netns


class LabError(RuntimeError):
    """A lab operation failed; the message says what and where to look."""


def default_state_dir() -> Path:
    return Path(os.environ.get("ENROLL_LAB_DIR") or DEFAULT_STATE_DIR)


def console_script(name: str) -> Path:
    """A console script of the venv running us (enroll-controller, enroll-agent)."""
    return Path(sys.executable).parent / name


class Lab:
    """A lab on this host, identified by its state dir and its name prefix."""

    def __init__(self, state_dir: str | Path | None = None, prefix: str = DEFAULT_PREFIX):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        if not self.state_dir.is_absolute() or len(self.state_dir.parts) < 3:
            raise LabError(f"state dir {self.state_dir} must be an absolute path at least two "
                           "levels deep (everything mounted below it is unmounted by down)")
        if not prefix or "/" in prefix or len(prefix) > 10:
            raise LabError(f"prefix {prefix!r} must be 1-10 characters without '/'")
        self.prefix = prefix
        short = prefix.rstrip("-") or "selab"
        self.run_base = Path("/run") / short
        self.host_if = short[:14] + "0"
        self.lan_ns = prefix + "lan"
        self.state_file = self.state_dir / "state.json"
        # argv prefixes of the programs the lab runs on the Pis (tests may substitute fakes)
        self.controller_cmd = [str(console_script("enroll-controller"))]
        self.agent_cmd = [str(console_script("enroll-agent"))]

    # ---- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The recorded state ({} when no lab is recorded)."""
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One up/down at a time per state dir."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = self.state_dir / ".lock"
        with locked(lock, 120, lambda: LabError(f"another enroll-lab operation holds {lock}")):
            yield

    # ---- paths -------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The swarm's enrollment CA certificate (public), for the admin's clients."""
        return self.state_dir / "ca.pem"

    def pi_dir(self, name: str) -> Path:
        return self.state_dir / name

    def netns_name(self, name: str) -> str:
        return self.prefix + name

    def daemon_spec(self, name: str) -> dockerd.DaemonSpec:
        return dockerd.DaemonSpec(
            name=name,
            netns=self.netns_name(name),
            data_root=self.pi_dir(name) / "docker",
            run_dir=self.run_base / name,
            log=self.pi_dir(name) / LOG_NAMES["docker"],
            cgroup_parent=self.prefix + name,
        )

    def _pi(self, name: str) -> dict[str, Any]:
        return self._entry(self.state(), name)

    def _entry(self, state: dict[str, Any], name: str) -> dict[str, Any]:
        for pi in state.get("pis", []):
            if pi["name"].lower() == name.lower():
                return pi
        raise LabError(f"no Pi named {name!r} in the lab at {self.state_dir}")

    def card_pi(self, name: str) -> cards.CardPi:
        """Where a card Pi keeps its disk and boot records; its cgroup."""
        return cards.CardPi(name, self.pi_dir(name), self.prefix + name)

    def rootfs(self) -> Path:
        """The card Pis' Debian root, built first if it is not cached (minutes)."""
        try:
            return rootfs.ensure(self.state_dir)
        except rootfs.RootfsError as exc:
            raise LabError(str(exc)) from None

    def _check_name_fits(self, name: str) -> None:
        sock = self.daemon_spec(name).exec_root / "containerd/containerd.sock.ttrpc"
        if len(str(sock)) >= 100:
            raise LabError(f"{name}: name too long for unix socket paths ({sock})")

    # ---- bring up ----------------------------------------------------------------------

    def up(
        self,
        config: ClusterConfig,
        *,
        controller: bool = True,
        agents: bool = True,
        image_names: Sequence[str] | None = None,
        timeout: float = 90.0,
    ) -> dict[str, Any]:
        """Build the lab from scratch (any stale lab is removed first); return status().

        Without `agents`, the controller Pi's agent still starts: it is what runs the
        controller, as on a Pi. On failure everything is torn down again (logs stay) and
        LabError is raised.
        """
        _require_root_and_tools()
        for pi in config.pis:
            self._check_name_fits(pi.name)
            if pi.card is not None:
                _check_card(pi.name, pi.card)
        lower = self.rootfs() if any(pi.card for pi in config.pis) else None
        self.down()
        try:
            with self._locked():
                self._up(config, controller, agents, image_names, timeout, lower)
        except BaseException as exc:
            try:
                self.down()
            except Exception as cleanup:
                raise LabError(f"{exc}; cleanup also failed: {cleanup}") from exc
            if isinstance(exc, LabError) or not isinstance(exc, Exception):
                raise
            raise LabError(str(exc)) from exc
        return self.status()

    def _up(
        self,
        config: ClusterConfig,
        with_controller: bool,
        with_agents: bool,
        image_names: Sequence[str] | None,
        timeout: float,
        lower: Path | None,
    ) -> None:
        prefixlen = config.subnet.prefixlen
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "lan_ns": self.lan_ns,
            "host_if": self.host_if,
            "run_base": str(self.run_base),
            "subnet": str(config.subnet),
            "admin_ip": str(config.admin_ip),
            "config": str(config.path) if config.path else None,
            "phase": "network",
            "controller": None,
            "pis": [
                {"name": p.name, "ip": str(p.ip), "netns": self.netns_name(p.name),
                 "index": i, "model": p.model, "arch": p.arch, "hardware_id": p.hardware_id,
                 "token": p.token, "manager": False, "dead": False, "dockerd_pid": None,
                 "procs": {},
                 **({"card": str(p.card), "rootfs": str(lower)} if p.card else {})}
                for i, p in enumerate(config.pis, start=1)
            ],
        }
        for p in config.pis:  # fresh per-Pi dirs (old logs included)
            shutil.rmtree(self.pi_dir(p.name), ignore_errors=True)
            self.pi_dir(p.name).mkdir(parents=True, mode=0o700)
        self._save(state)  # before creating anything: down() must know

        netns.create_lan(self.lan_ns)
        netns.add_host_link(self.lan_ns, self.host_if, f"{config.admin_ip}/{prefixlen}")
        for pi in state["pis"]:
            netns.add_netns(pi["netns"])
            netns.add_pi_link(self.lan_ns, pi["netns"], pi["index"], f"{pi['ip']}/{prefixlen}")

        state["phase"] = "daemons"
        self._save(state)
        try:
            pids = dockerd.start_all([self.daemon_spec(p.name) for p in config.pis], timeout)
        except dockerd.DaemonError as exc:
            raise LabError(f"starting dockerd failed: {exc}") from None
        for pi in state["pis"]:
            pi["dockerd_pid"] = pids[pi["name"]]
        state["phase"] = "images"
        self._save(state)

        names = list(image_names or self.image_names(config))
        clients = {p.name: self.docker(p.name) for p in config.pis}
        try:
            images.import_everywhere(clients, names)
        finally:
            for c in clients.values():
                c.close()
        state["images"] = names

        if with_controller and config.controller:
            state["phase"] = "controller"
            self._save(state)
            state["controller"] = self._start_controller(config, state)
        state["phase"] = "agents"
        self._save(state)
        if with_agents:
            self._start_agents(config, state)
        elif state.get("controller"):  # the controller's own agent runs it, as on a Pi
            _require_program(self.agent_cmd[0])
            first = config.pi(state["controller"]["name"])
            self._check_agents_started([(first.name, self._start_first_agent(state, first))])
        for entry in state["pis"]:
            if entry.get("card"):
                self._boot_card(state, entry, fresh=True)
        state["phase"] = "up"
        self._save(state)

    @staticmethod
    def image_names(config: ClusterConfig) -> list[str]:
        """Names to tag the stand-in with: defaults, the cluster file's, the baseline's."""
        baseline = config.baseline or Path(__file__).resolve().parent.parent / "baseline.yml"
        names = [*images.DEFAULT_IMAGES, *config.images, *images.baseline_images(baseline)]
        return list(dict.fromkeys(names))

    # ---- controller and agents (the contract with controller/ and agent/) --------------

    def _start_controller(self, config: ClusterConfig, state: dict[str, Any]) -> dict[str, Any]:
        assert config.controller is not None and config.rules is not None
        pi = config.pi(config.controller)
        spec = self.daemon_spec(pi.name)
        cdir = self.pi_dir(pi.name) / "controller"
        log = self.pi_dir(pi.name) / LOG_NAMES["controller"]
        exe = self.controller_cmd
        _require_program(exe[0])
        init = self.exec(
            pi.name,
            [*exe, "init", "--state-dir", str(cdir), "--advertise-addr", str(pi.ip),
             "--docker-host", spec.docker_host, "--rules", str(config.rules), "--json",
             "--viz-socket-dir", str(spec.viz_socket_dir),
             *(["--baseline", str(config.baseline)] if config.baseline else [])],
            capture_output=True, timeout=120,
        )
        with open(log, "a") as fh:
            fh.write(init.stderr)
        if init.returncode != 0:
            raise LabError(f"enroll-controller init on {pi.name} failed "
                           f"(status {init.returncode}, log: {log})\n{dockerd.log_tail(log)}")
        info = _last_json_object(init.stdout)
        if not all(k in info for k in ("url", "pin", "admin_token")):
            raise LabError(f"enroll-controller init printed no JSON with url, pin, admin_token: "
                           f"{init.stdout[-300:]!r}")
        shutil.copy(cdir / "ca.pem", self.ca_file)  # outlives the first manager's Pi
        ctl = {"name": pi.name, "url": info["url"], "pin": info["pin"],
               "admin_token": info["admin_token"], "state_dir": str(cdir)}
        state["controller"] = ctl
        self._save(state)
        return ctl

    def _wait_healthz(self, ctl: dict[str, Any], proc: subprocess.Popen, log: Path) -> None:
        """Until the controller answers; `proc` is the agent that starts it."""
        ca = self.ca_file
        deadline = time.monotonic() + 60
        last: object = None
        with _session() as s:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    agent_log = self.pi_dir(ctl["name"]) / LOG_NAMES["agent"]
                    raise LabError(f"the agent of {ctl['name']} exited (status "
                                   f"{proc.returncode}, log: {agent_log})\n"
                                   f"{dockerd.log_tail(agent_log)}")
                try:
                    r = s.get(ctl["url"] + "/healthz", verify=str(ca), timeout=3)
                    if r.status_code == 200:
                        return
                    last = r.status_code
                except requests.RequestException as exc:
                    last = exc
                time.sleep(0.3)
        raise LabError(f"controller at {ctl['url']} not healthy within 60s (last: {last}, "
                       f"log: {log})\n{dockerd.log_tail(log)}")

    def _bootstrap_token(self, ctl: dict[str, Any]) -> str:
        ca = self.ca_file
        with _session() as s:
            r = s.post(ctl["url"] + "/v1/tokens", verify=str(ca), timeout=10,
                       headers={"Authorization": f"Bearer {ctl['admin_token']}"},
                       json={"ttl_seconds": 86400, "uses": 100, "description": "lab"})
        if r.status_code != 201:
            raise LabError(f"POST {ctl['url']}/v1/tokens answered {r.status_code}: "
                           f"{r.text[:300]}")
        return r.json()["token"]

    def _start_agents(self, config: ClusterConfig, state: dict[str, Any]) -> None:
        """The first manager's agent first: it starts the controller there (as every
        manager's agent does), which makes the bootstrap token the others carry. A Pi that
        boots a card brings its own agent."""
        pis = [pi for pi in config.pis if pi.card is None]
        if not pis:
            return
        ctl = state.get("controller")
        if not ctl:
            raise LabError("agents need the controller (its CA pin); use --no-agents")
        _require_program(self.agent_cmd[0])
        started: list[tuple[str, subprocess.Popen]] = []
        first = next((pi for pi in pis if pi.name == ctl["name"]), None)
        if first is not None:
            started.append((first.name, self._start_first_agent(state, first)))
        for pi in pis:
            if first is not None and pi.name == first.name:
                continue
            conf = self.write_agent_config(pi, ctl["pin"], ctl.get("token") if pi.token else None)
            started.append((pi.name, self._spawn_agent(state, pi.name, conf)))
        self._check_agents_started(started)

    def _start_first_agent(self, state: dict[str, Any], first: PiSpec) -> subprocess.Popen:
        """The first manager's agent, which starts the controller; then the lab's token."""
        ctl = state["controller"]
        conf = self.write_agent_config(first, ctl["pin"], None)
        proc = self._spawn_agent(state, first.name, conf)
        self._wait_healthz(ctl, proc, self.pi_dir(first.name) / LOG_NAMES["controller"])
        ctl["token"] = self._bootstrap_token(ctl)
        self._save(state)
        return proc

    def _spawn_agent(self, state: dict[str, Any], name: str, conf: Path) -> subprocess.Popen:
        """`enroll-agent run --config <conf>` inside the Pi, logging to its agent.log."""
        log = self.pi_dir(name) / LOG_NAMES["agent"]
        proc = self.popen(name, [*self.agent_cmd, "run", "--config", str(conf)], log=log)
        self._record_proc(state, name, "agent", proc.pid)
        return proc

    def _check_agents_started(self, started: Sequence[tuple[str, subprocess.Popen]]) -> None:
        """LabError (with the log tail) if an agent exits within AGENT_STARTUP_CHECK."""
        time.sleep(AGENT_STARTUP_CHECK)
        dead = [(name, p) for name, p in started if p.poll() is not None]
        if dead:
            name, p = dead[0]
            log = self.pi_dir(name) / LOG_NAMES["agent"]
            raise LabError(f"enroll-agent on {name} exited (status {p.returncode}, "
                           f"log: {log})\n{dockerd.log_tail(log)}")

    def write_agent_config(
        self, pi: PiSpec, pin: str | None, token: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """<state>/<pi>/agent.toml (0600), as the agent contract says.

        `extra` adds keys or overrides the lab's (e.g. {"poll_max_seconds": 2.0},
        {"ca_pin": "..."}, {"controller_url": ..., "mdns": False}); a value of None drops
        the key. Values: strings, booleans, numbers or lists of them.
        """
        spec = self.daemon_spec(pi.name)
        values: dict[str, Any] = {
            "state_dir": str(self.pi_dir(pi.name) / "agent"),
            # where a controller on this Pi keeps its state (its local-agent secret)
            "controller_dir": str(self.pi_dir(pi.name) / "controller"),
            # while the Pi is a manager, the agent runs its controller (no systemd here)
            "controller_unit": "",
            "controller_command": self.controller_command(pi.name),
            "controller_log": str(self.pi_dir(pi.name) / LOG_NAMES["controller"]),
            "ca_pin": pin,
            "docker_host": spec.docker_host,
            "hardware_id": pi.hardware_id,
            "advertise_addr": str(pi.ip),
            "model": pi.model,
            "arch": pi.arch,
        }
        if token:
            values["bootstrap_token"] = token
        for key, value in (extra or {}).items():
            if not isinstance(key, str) or not _TOML_KEY.match(key):
                raise LabError(f"agent setting {key!r}: not a plain TOML key")
            values[key] = value
        lines = []
        for key, value in values.items():
            if value is None:
                continue
            try:
                lines.append(f"{key} = {_toml_value(value)}\n")
            except ValueError as exc:
                raise LabError(f"agent setting {key}: {exc}") from None
        path = self.pi_dir(pi.name) / "agent.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(lines))
        os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
        return path

    def controller_command(self, name: str) -> list[str]:
        """What a Pi's agent runs while the Pi is a manager: a controller on the Pi's own
        state dir, Docker socket and viz socket dir (a promoted Pi's controller writes its
        config from these and from its Docker daemon)."""
        spec = self.daemon_spec(name)
        return [*self.controller_cmd, "serve", "--state-dir", str(self.pi_dir(name) /
                                                                 "controller"),
                "--docker-host", spec.docker_host,
                "--viz-socket-dir", str(spec.viz_socket_dir)]

    def controller_pid(self, name: str) -> int | None:
        """The pid of the controller serving on that Pi, if one runs."""
        netns_id = netns.netns_id(self.netns_name(self._pi(name)["name"]))
        for pid in procs.pids():
            argv = procs.cmdline(pid)
            if (procs.alive(pid) and self.controller_cmd[-1] in argv and "serve" in argv
                    and procs.netns_of(pid) == netns_id):
                return pid
        return None

    def _record_proc(self, state: dict[str, Any], name: str, role: str, pid: int) -> None:
        for pi in state["pis"]:
            if pi["name"] == name:
                pi["procs"][role] = pid
        self._save(state)

    # ---- using the lab -----------------------------------------------------------------

    def _enter(self, name: str) -> tuple[list[str], dict[str, str]]:
        pi = self._pi(name)
        spec = self.daemon_spec(pi["name"])
        pid = dockerd.daemon_pid(spec, pi.get("dockerd_pid"))
        if pid is None:
            raise LabError(f"{pi['name']}: its dockerd is not running (needed to enter its "
                           "network and UTS namespaces)")
        env = dict(os.environ, DOCKER_HOST=spec.docker_host)
        return ["nsenter", f"--target={pid}", "--net", "--uts", "--"], env

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        capture_output: bool = False,
        check: bool = False,
        timeout: float | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run argv in the Pi's network and UTS namespaces with DOCKER_HOST set (text mode)."""
        prefix, full_env = self._enter(name)
        full_env.update(env or {})
        return subprocess.run([*prefix, *argv], env=full_env, capture_output=capture_output,
                              check=check, timeout=timeout, input=input, text=True)

    def popen(
        self, name: str, argv: Sequence[str], *, log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a background process inside the Pi (down() kills it: it lives in a lab
        netns); output goes to `log` (appended) or is discarded."""
        prefix, full_env = self._enter(name)
        full_env.update(env or {})
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            return subprocess.Popen([*prefix, *argv], env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        finally:
            if log:
                out.close()

    def docker(self, name: str, timeout: int = 60) -> docker.DockerClient:
        """A docker SDK client for that Pi's daemon."""
        return dockerd.client(self.daemon_spec(self._pi(name)["name"]), timeout=timeout)

    def docker_host(self, name: str) -> str:
        return self.daemon_spec(self._pi(name)["name"]).docker_host

    def log_path(self, name: str, which: str) -> Path:
        """<state>/<pi>/<dockerd|controller|agent>.log"""
        return self.pi_dir(self._pi(name)["name"]) / LOG_NAMES[which]

    # ---- changing the lab while it is up ----------------------------------------------

    def add_pi(
        self,
        name: str,
        *,
        hardware_id: str | None = None,
        manager: bool = False,
        token: str | None = None,
        agent: bool = True,
        model: str | None = None,
        arch: str | None = None,
        ip: str | ipaddress.IPv4Address | None = None,
        agent_settings: Mapping[str, Any] | None = None,
        card: str | Path | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """A freshly flashed Pi appears on the lab LAN; return its status() node.

        New namespace and veth on the LAN bridge (next free address, or `ip`), its own
        dockerd with the lab's stand-in images, recorded in state.json like the cluster
        file's Pis. Unless `agent` is False, its agent starts with a fresh state dir (a new
        key) and an agent.toml with the controller's pin (or agent_settings["ca_pin"]).
        `token`: None = no bootstrap token, "lab" = the lab's own, else that token.
        `manager` is only recorded (the controller's rules decide the role).
        `agent_settings` go into agent.toml (see write_agent_config).

        `card`: the Pi boots this card (a boot partition written by `enrollctl flash` for
        hostname `name`) under systemd instead of running a lab agent; its hardware id is
        its machine id (32 hex digits, random unless given); returns once the booted
        system's PID 1 runs (the first boot goes on by itself).

        A name killed with kill_pi may be added again: the replaced Pi (same hostname, new
        hardware id unless given, new key, blank disk; old logs rotated to *.log.1).
        A live name raises LabError. If bringing the Pi up fails, it is unplugged again
        (recorded as dead, logs kept) and LabError is raised.
        """
        _require_root_and_tools()
        if not valid_hostname(name):
            raise LabError(f"name {name!r} is not a valid hostname (RFC 1123 label: letters, "
                           f"digits, inner hyphens, at most {MAX_NAME} characters here)")
        if name.lower() in RESERVED_NAMES:
            raise LabError(f"name {name!r} is reserved by the lab")
        self._check_name_fits(name)
        lower = None
        if card is not None:
            if token is not None or agent_settings:
                raise LabError("a card Pi's agent takes its settings from the card (flash the "
                               "token onto it); give no token or agent settings")
            card = _check_card(name, card)
            if hardware_id is not None and not valid_machine_id(hardware_id):
                raise LabError(f"hardware_id {hardware_id!r}: a card Pi's hardware id is its "
                               "machine id, 32 lowercase hex digits")
            hardware_id = hardware_id or secrets.token_hex(16)
            arch = arch or host_arch()
            model = model or CARD_MODEL.format(arch=arch)
            agent = False
            lower = self.rootfs()  # before the lab's lock: the first build takes minutes
        hwid = hardware_id if hardware_id is not None else "00000000" + secrets.token_hex(4)
        if not valid_hardware_id(hwid):
            raise LabError(f"hardware_id {hwid!r} must be 1-64 characters of letters, "
                           "digits, '.', '_', ':' or '-'")
        arch = arch or _guess_arch(model)
        if arch not in KNOWN_ARCHES:
            raise LabError(f"arch {arch!r} is not one of {', '.join(sorted(KNOWN_ARCHES))}")
        model = model if model is not None else DEFAULT_MODELS[arch]
        if not isinstance(model, str) or not model.strip() or len(model) > 200:
            raise LabError("model must be a non-empty string (at most 200 characters)")
        if token is not None and not isinstance(token, str):
            raise LabError("token must be a string (or None, or 'lab')")
        settings = dict(agent_settings or {})

        with self._locked():
            state = self.state()
            if state.get("phase") != "up" or not netns.netns_exists(self.lan_ns):
                raise LabError(f"no lab is up at {self.state_dir} (enroll-lab up first)")
            old = next((p for p in state["pis"] if p["name"].lower() == name.lower()), None)
            if old is not None and not old.get("dead"):
                raise LabError(f"{old['name']} is already in the lab and alive; kill it first "
                               f"(enroll-lab kill {old['name']}) to replace it")
            others = [p for p in state["pis"] if p is not old]
            addr = self._pick_ip(state, others, old, ip)
            index = min(set(range(1, len(others) + 2)) - {p["index"] for p in others})

            ctl = state.get("controller") or {}
            if token == "lab":
                if not ctl.get("token"):
                    raise LabError("token 'lab': this lab has no controller bootstrap token "
                                   "(it was brought up without a controller)")
                token = ctl["token"]
            pin = ctl.get("pin")
            if agent:
                if not pin and not settings.get("ca_pin"):
                    raise LabError("the lab has no controller (its CA pin for the agent); "
                                   "add the Pi without its agent or give agent_settings "
                                   "ca_pin")
                _require_program(self.agent_cmd[0])

            # a new SD card: blank disk, fresh agent state; the old logs stay, rotated
            if old is not None:
                _rotate_logs(self.pi_dir(old["name"]))
                _wipe_pi_dir(self.pi_dir(old["name"]))
            if (old is None or old["name"] != name) and self.pi_dir(name).exists():
                _remove(self.pi_dir(name))  # a stale dir of an earlier lab, old logs too
            self.pi_dir(name).mkdir(parents=True, mode=0o700, exist_ok=True)

            entry = {"name": name, "ip": str(addr), "netns": self.netns_name(name),
                     "index": index, "model": model, "arch": arch, "hardware_id": hwid,
                     "token": token is not None, "manager": bool(manager), "dead": False,
                     "added": True, "dockerd_pid": None, "procs": {},
                     **({"card": str(card), "rootfs": str(lower)} if card else {})}
            if old is not None:
                state["pis"][state["pis"].index(old)] = entry
            else:
                state["pis"].append(entry)
            self._save(state)  # before creating anything: down() must know

            try:
                self._bring_up_pi(state, entry, timeout)
                if card is not None:
                    self._boot_card(state, entry, fresh=True)
                if agent:
                    spec = PiSpec(name=name, model=model, arch=arch, hardware_id=hwid,
                                  ip=addr, token=token is not None)
                    conf = self.write_agent_config(spec, pin, token, settings)
                    proc = self._spawn_agent(state, name, conf)
                    self._check_agents_started([(name, proc)])
            except BaseException as exc:
                try:
                    self._unplug(entry)
                finally:
                    entry.update(dead=True, dockerd_pid=None, procs={})
                    self._save(state)
                if isinstance(exc, LabError) or not isinstance(exc, Exception):
                    raise
                raise LabError(f"adding {name} failed: {exc}") from exc
        return self.node(name)

    def _pick_ip(
        self, state: dict[str, Any], others: list[dict[str, Any]], old: dict[str, Any] | None,
        wanted: str | ipaddress.IPv4Address | None,
    ) -> ipaddress.IPv4Address:
        """`wanted` if it is free; else the replaced Pi's old address if free; else the next
        address from .11 up that no recorded Pi (alive or dead) has."""
        subnet = ipaddress.IPv4Network(state["subnet"])
        admin = ipaddress.IPv4Address(state["admin_ip"])
        live = {p["ip"]: p["name"] for p in others if not p.get("dead")}
        if wanted is not None:
            try:
                addr = ipaddress.IPv4Address(str(wanted))
            except ValueError:
                raise LabError(f"ip {wanted!r} is not an IPv4 address") from None
            if addr not in subnet or addr in (subnet.network_address,
                                              subnet.broadcast_address):
                raise LabError(f"ip {addr} is outside the lab subnet {subnet} "
                               "(or is its network/broadcast address)")
            if addr == admin:
                raise LabError(f"ip {addr} is reserved for the host's admin veth")
            if str(addr) in live:
                raise LabError(f"ip {addr} is already used by {live[str(addr)]}")
            return addr
        if old is not None and old["ip"] not in live:
            return ipaddress.IPv4Address(old["ip"])
        taken = {p["ip"] for p in others} | {str(admin)}
        hosts = list(subnet.hosts())
        start = min(FIRST_HOST - 1, len(hosts))
        for addr in hosts[start:] + hosts[:start]:
            if str(addr) not in taken:
                return addr
        raise LabError(f"no free address left in {subnet}")

    def _bring_up_pi(self, state: dict[str, Any], entry: dict[str, Any], timeout: float) -> None:
        """Namespace, veth, dockerd and stand-in images of one added Pi."""
        prefixlen = ipaddress.IPv4Network(state["subnet"]).prefixlen
        self._delete_pi_net(entry)  # leftovers of a crashed earlier attempt, if any
        try:
            netns.add_netns(entry["netns"])
            netns.add_pi_link(self.lan_ns, entry["netns"], entry["index"],
                              f"{entry['ip']}/{prefixlen}")
        except netns.NetError as exc:
            raise LabError(f"{entry['name']}: network set-up failed: {exc}") from None
        spec = self.daemon_spec(entry["name"])
        try:
            entry["dockerd_pid"] = dockerd.start(spec, timeout)
        except dockerd.DaemonError as exc:
            raise LabError(f"starting dockerd failed: {exc}") from None
        self._save(state)
        names = list(state.get("images") or images.DEFAULT_IMAGES)
        client = dockerd.client(spec)
        try:
            images.import_everywhere({entry["name"]: client}, names)
        except images.ImageError as exc:
            raise LabError(str(exc)) from None
        finally:
            client.close()

    def _boot_card(self, state: dict[str, Any], entry: dict[str, Any], fresh: bool) -> None:
        """Power a card Pi on (`fresh`: its first power-on, on a blank disk)."""
        name = entry["name"]
        try:
            pid = cards.boot(
                self.card_pi(name), lower=Path(entry["rootfs"]), card=Path(entry["card"]),
                netns=netns.netns_path(entry["netns"]), docker_sock=self.daemon_spec(name).sock,
                machine_id=entry["hardware_id"], fresh=fresh)
        except cards.CardError as exc:
            raise LabError(str(exc)) from None
        entry["procs"]["card"] = pid
        self._save(state)

    def kill_pi(self, name: str) -> None:
        """Pull the plug: SIGKILL everything of that Pi (dockerd, containerd, containers,
        agent, controller, a card Pi's booted system), remove its namespace and its veth on
        the LAN (and the mounts that die with the power); its disk and logs stay. It shows
        as not running (dead) and add_pi may plug in a replacement under the same name.
        Killing it again is a no-op."""
        with self._locked():
            state = self.state()
            entry = self._entry(state, name)
            try:
                self._unplug(entry)
            finally:
                entry.update(dead=True, dockerd_pid=None, procs={})
                self._save(state)

    def _unplug(self, entry: dict[str, Any]) -> None:
        """Kill the Pi's processes; unmount and drop its runtime dir; delete its netns and
        veth. Its data root, its card Pi's disk and its logs stay. LabError if something would
        not go."""
        errors = cards.power_off(self.card_pi(entry["name"])) if entry.get("card") else []
        spec = self.daemon_spec(entry["name"])
        ns = netns.netns_id(entry["netns"])
        still = procs.kill_all(lambda: {*procs.in_netns([ns] if ns else []),
                                        *procs.with_arg_containing(f"{spec.run_dir}/"),
                                        *procs.in_cgroup(spec.cgroup_parent)})
        if still:
            errors.append(f"processes would not die: {still}")
        left = mounts.unmount_under(spec.run_dir, spec.data_root)
        if left:
            errors.append(f"still mounted: {', '.join(left[:5])}")
        else:
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        self._delete_pi_net(entry)
        if netns.netns_exists(entry["netns"]):
            errors.append(f"namespace {entry['netns']} still exists")
        if errors:
            raise LabError(f"unplugging {entry['name']}: {'; '.join(errors)}")

    def _delete_pi_net(self, entry: dict[str, Any]) -> None:
        """Its veth on the LAN bridge (both ends) and its namespace; gone already is fine."""
        lan_if = f"selv{entry['index']}"
        if netns.netns_exists(self.lan_ns) and netns.link_exists(lan_if, netns=self.lan_ns):
            netns.ip("link", "delete", lan_if, netns=self.lan_ns, check=False)
        netns.delete_netns(entry["netns"])

    def restart_agent(self, name: str, timeout: float = 10.0) -> int:
        """Stop the Pi's agent (SIGTERM, `timeout` s, SIGKILL) and start it again with the
        same agent.toml and state dir (same key); return the new pid (recorded in state)."""
        with self._locked():
            state = self.state()
            entry = self._entry(state, name)
            name = entry["name"]
            if entry.get("dead"):
                raise LabError(f"{name} is unplugged (kill_pi); add it again instead")
            conf = self.pi_dir(name) / "agent.toml"
            if not conf.is_file():
                raise LabError(f"{name} has no agent config {conf} (added without its agent?)")
            _require_program(self.agent_cmd[0])
            old = entry.get("procs", {}).get("agent")
            if old and procs.alive(old) and str(conf) in procs.cmdline(old):
                procs.terminate([old], timeout=timeout)
                if procs.alive(old):
                    raise LabError(f"the agent of {name} (pid {old}) would not stop")
            proc = self._spawn_agent(state, name, conf)
            self._check_agents_started([(name, proc)])
            return proc.pid

    def reboot_pi(self, name: str, *, hard: bool = False, timeout: float = 60.0) -> None:
        """Reboot a card Pi: `systemctl reboot` in it, or with `hard`, cut its power (the
        booted system is killed, its disk unmounted) and power it on again. Its dockerd is
        the lab's and stays. Returns once the new boot's PID 1 runs."""
        with self._locked():
            state = self.state()
            entry = self._entry(state, name)
            if not entry.get("card"):
                raise LabError(f"{entry['name']} boots no card (add it with a card)")
            if entry.get("dead"):
                raise LabError(f"{entry['name']} is unplugged (kill_pi); add it again instead")
            pi = self.card_pi(entry["name"])
            if hard or cards.leader(pi) is None:
                errors = cards.power_off(pi)
                if errors:
                    raise LabError(f"cutting the power of {pi.name}: {'; '.join(errors)}")
                self._boot_card(state, entry, fresh=False)
                return
            before = cards.boot_count(pi)
            self.os_exec(pi.name, ["systemctl", "reboot"], timeout=30)
            deadline = time.monotonic() + timeout
            while cards.boot_count(pi) == before or cards.leader(pi) is None:
                if time.monotonic() > deadline:
                    raise LabError(f"{pi.name} did not come back within {timeout:.0f}s "
                                   f"(console: {pi.console})")
                time.sleep(0.2)

    def os_exec(
        self, name: str, argv: Sequence[str], *, capture_output: bool = False,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess:
        """Run argv inside a card Pi's booted system (all its namespaces), as root."""
        entry = self._pi(name)
        if not entry.get("card"):
            raise LabError(f"{entry['name']} boots no card; use exec")
        pid = cards.leader(self.card_pi(entry["name"]))
        if pid is None:
            raise LabError(f"{entry['name']} is not running (its booted system is down)")
        return subprocess.run([*cards.enter_argv(pid), *argv], capture_output=capture_output,
                              timeout=timeout, text=True, stdin=subprocess.DEVNULL)

    def node(self, name: str) -> dict[str, Any]:
        """One Pi's entry of status()["nodes"]."""
        wanted = self._pi(name)["name"]
        return next(n for n in self.status()["nodes"] if n["name"] == wanted)

    def status(self) -> dict[str, Any]:
        """{"controller_url" (the first controller's), "pin", "admin_token", "controllers"
        (every controller running now: name, url), "state_dir", "phase", "nodes": [...]}.
        A node's `added_as_manager` is `add --manager`'s note only: the rules and the quorum
        keeper decide roles, and the swarm (`enrollctl cluster`) says them."""
        state = self.state()
        ctl = state.get("controller") or {}
        nodes = []
        for pi in state.get("pis", []):
            spec = self.daemon_spec(pi["name"])
            dead = bool(pi.get("dead"))
            pid = None if dead else dockerd.daemon_pid(spec, pi.get("dockerd_pid"))
            agent = None if dead else pi.get("procs", {}).get("agent")
            nodes.append({
                "name": pi["name"], "ip": pi["ip"], "netns": pi["netns"],
                "docker_host": spec.docker_host, "pid": pid, "running": pid is not None,
                "model": pi["model"], "arch": pi["arch"], "hardware_id": pi["hardware_id"],
                "controller": ctl.get("name") == pi["name"],
                "added_as_manager": bool(pi.get("manager")), "dead": dead,
                "agent_pid": agent, "agent_running": bool(agent and procs.alive(agent)),
                "card": pi.get("card"),
                "booted": bool(pi.get("card") and not dead
                               and cards.leader(self.card_pi(pi["name"]))),
            })
        controllers = [{"name": n["name"], "url": f"https://{n['ip']}:{CONTROLLER_PORT}"}
                       for n in nodes if n["running"] and self.controller_pid(n["name"])]
        return {
            "controller_url": ctl.get("url"), "pin": ctl.get("pin"),
            "admin_token": ctl.get("admin_token"), "controllers": controllers,
            "ca": str(self.ca_file) if ctl.get("state_dir") else None,
            "state_dir": str(self.state_dir), "phase": state.get("phase"), "nodes": nodes,
        }

    # ---- tear down ---------------------------------------------------------------------

    def down(self) -> None:
        """Remove every trace of the lab; idempotent; works after a crash.

        Raises LabError only if something could not be removed (after trying everything).
        """
        if os.geteuid() != 0:
            raise LabError("enroll-lab needs root")
        with self._locked():
            errors = self._down()
        if errors:
            raise LabError(f"teardown incomplete: {'; '.join(errors)}")

    def _down(self) -> list[str]:
        state = self.state()
        errors: list[str] = []
        names = {p["name"]: p.get("dockerd_pid") for p in state.get("pis", [])}
        for d in _subdirs(self.run_base):  # daemons of a lab whose state.json is lost
            names.setdefault(d.name, None)
        for d in _subdirs(self.state_dir):
            if (d / "docker").is_dir():
                names.setdefault(d.name, None)
        specs = {n: self.daemon_spec(n) for n in names}
        ns_ids = [i for n in netns.list_netns(self.prefix) if (i := netns.netns_id(n))]

        # 1. controller, agents and anything else living in a lab namespace, daemons aside
        daemon_like = {pid for s in specs.values() if (pid := dockerd.daemon_pid(s, names[s.name]))}
        daemon_like |= set(procs.with_arg_containing(f"{self.run_base}/"))
        recorded = [pid for p in state.get("pis", []) for pid in p.get("procs", {}).values()
                    if pid and procs.netns_of(pid) in set(ns_ids)]
        # containers go first and hard: a PID 1 that ignores SIGTERM (sleep, httpd) would
        # otherwise hold each daemon's shutdown for its 10 s stop timeout
        containers = set(procs.in_cgroup(self.prefix, prefix=True))
        procs.kill(containers)
        others = (set(procs.in_netns(ns_ids)) | set(recorded)) - daemon_like - containers
        procs.terminate(others, timeout=5)

        # 2. daemons (graceful), their containerd, shims, containers, mounts and dirs
        errors += dockerd.stop_all([(s, names[n]) for n, s in specs.items()])

        # 3. whatever is still in a lab namespace, cgroup or runtime dir
        still = procs.kill_all(lambda: {*procs.in_netns(ns_ids),
                                        *procs.in_cgroup(self.prefix, prefix=True),
                                        *procs.with_arg_containing(f"{self.run_base}/")})
        if still:
            errors.append(f"processes would not die: {still}")
        else:  # a lab avahi-daemon's mountpoint (deploy/lab/avahi.py); its daemon is gone
            avahi.remove_mountpoint(self.netns_name(n) for n in names)

        # 4. mounts, namespaces, the host veth
        left = mounts.unmount_under(self.run_base, self.state_dir)
        if left:
            errors.append(f"still mounted: {', '.join(left)}")
        for name in netns.list_netns(self.prefix):
            netns.delete_netns(name)
        if netns.list_netns(self.prefix):
            errors.append(f"namespaces left: {netns.list_netns(self.prefix)}")
        netns.delete_link(self.host_if)
        if netns.link_exists(self.host_if):
            errors.append(f"link {self.host_if} still exists")

        # 5. files (logs stay for the post-mortem) and cgroups
        if not left:
            shutil.rmtree(self.run_base, ignore_errors=True)
            for d in _subdirs(self.state_dir):
                if d.name not in names and not (d / LOG_NAMES["docker"]).exists():
                    continue  # not a Pi's directory: not ours to clean
                for item in d.iterdir():
                    if not (_LOG_FILE.search(item.name) and item.is_file()):
                        try:
                            _remove(item)
                        except Exception as exc:
                            errors.append(f"cannot remove {item}: {exc}")
        busy = cgroups.remove(self.prefix)
        if busy:
            errors.append(f"cgroups still in use: {busy}")
        cards.forget(self.prefix)
        if not errors:
            self.state_file.unlink(missing_ok=True)
            self.ca_file.unlink(missing_ok=True)
        return errors


def _toml_value(value: Any) -> str:
    """A TOML literal for a string, boolean, finite number or list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are TOML's; DEL is the one control JSON leaves as it is
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"{type(value).__name__} values cannot be written (str, bool, int, "
                     "float or a list of them)")


def _check_card(name: str, path: str | Path) -> Path:
    """The card's path if it is a flashed card for hostname `name`, else LabError."""
    try:
        card = cards.read_card(path)
    except cards.CardError as exc:
        raise LabError(str(exc)) from None
    if card.hostname != name:
        raise LabError(f"the card at {card.path} is for {card.hostname!r} (its hostname): "
                       f"plug it into a Pi of that name, not {name!r}")
    for tool in (cards.NSPAWN, "mount"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            raise LabError(f"{tool} is not installed (apt-get install systemd-container)")
    return card.path


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("enroll-lab needs root (network namespaces, dockerd)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in REQUIRED_TOOLS if not shutil.which(t, path=path)]
    if not images.BUSYBOX.is_file():
        missing.append(f"{images.BUSYBOX} (busybox-static)")
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} "
                       "(apt-get install iproute2 util-linux docker.io busybox-static)")
    if _host_avahi():
        raise LabError("avahi-daemon runs on this host: the lab's agents and controllers "
                       "would announce through it, on the host's own interfaces; stop it "
                       "(systemctl disable --now avahi-daemon.service avahi-daemon.socket)")


def _host_avahi() -> bool:
    """An avahi-daemon answers on /run/avahi-daemon in the host's own network namespace
    (one that a test runs in a lab Pi's namespace is no harm)."""
    if not os_avahi.running():
        return False
    try:
        pid = int((os_avahi.RUN_DIR / "pid").read_text())
    except (OSError, ValueError):
        return True  # whose it is unknown: assume the host's
    return procs.netns_of(pid) in (None, procs.netns_of(os.getpid()))


def _require_program(path: str) -> None:
    if not os.access(path, os.X_OK):
        raise LabError(f"{path} is not installed (pip install -e '.[dev]' in this venv)")


def _session() -> requests.Session:
    """HTTP session that ignores proxy settings: lab traffic goes to lab addresses only."""
    s = requests.Session()
    s.trust_env = False
    return s


def _last_json_object(text: str) -> dict[str, Any]:
    """The JSON object a command printed (whole stdout, else its last JSON line)."""
    with contextlib.suppress(ValueError):
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj
    return {}


def _guess_arch(model: str | None) -> str:
    """The CPU architecture a Pi model string suggests (armv7l when unsure)."""
    m = (model or "").lower()
    if "zero 2" in m or "pi 4" in m or "pi 5" in m or "compute module 4" in m:
        return "aarch64"
    if "zero" in m or "pi model" in m:  # a Zero / Zero W, or a first "Raspberry Pi Model B"
        return "armv6l"
    return "armv7l"


def _rotate_logs(pi_dir: Path) -> None:
    """agent.log -> agent.log.1 (agent.log.1 -> agent.log.2, ...), for each kind of log."""
    for base in LOG_NAMES.values():
        current = pi_dir / base
        if not current.exists():
            continue
        n = 1
        while (pi_dir / f"{base}.{n}").exists():
            n += 1
        for i in range(n, 1, -1):
            (pi_dir / f"{base}.{i - 1}").rename(pi_dir / f"{base}.{i}")
        current.rename(pi_dir / f"{base}.1")


def _wipe_pi_dir(pi_dir: Path) -> None:
    """Everything in a Pi's directory but its logs (unmounting first where needed)."""
    if not pi_dir.is_dir():
        return
    for item in list(pi_dir.iterdir()):
        if not (_LOG_FILE.search(item.name) and item.is_file()):
            _remove(item)


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        mounts.remove_tree(path)
    else:
        path.unlink(missing_ok=True)
