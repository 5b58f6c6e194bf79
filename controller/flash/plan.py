"""Validate everything, compute every file, then write: bad input never touches the card.

`make_plan` reads the card and the inputs and returns a `Plan` (file contents in memory,
files to copy, backups to take); it raises FlashError, changing nothing, on any problem.
`apply` writes the plan: backups first, then the `swarm-enroll/` payload, then the
cloud-init files, and `cmdline.txt` last, so that a card is only ever hooked to a
complete payload. Running both again with the same options gives the same card.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from agent.config import ConfigError, parse_config
from agent.wire.errors import WireError
from agent.wire.keys import check_pin_format, pin_of_certificate
from agent.wire.messages import validate_hostname
from controller.flash import PAYLOAD_DIR, cloudinit
from controller.flash.bootfs import (
    BootFS,
    FlashError,
    atomic_copy,
    atomic_write,
    backup_once,
    backup_path,
    edit_cmdline,
    open_bootfs,
    read_card,
    refuse_symlinks,
    sync,
)
from controller.flash.wheel import check_wheel, check_wheelhouse
from controller.flash.wifi import Wifi, network_config, nm_keyfile, wpa_supplicant_conf

TOKEN = re.compile(r"^seb_[A-Za-z0-9_-]{16,128}$")
SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$"
)
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PACKAGE = re.compile(r"^(none|[a-z0-9][a-z0-9+.-]{1,62})$")
CONTROLLER_FILES = ("ca.pem", "ca-key.pem", "tls.pem", "tls-key.pem", "controller.toml")
CLOUD_INIT_FILES = ("user-data", "network-config", "meta-data")
UNITS = ("enroll-agent.service", "enroll-controller.service", "swarm-enroll-firstboot.service",
         "restart-backoff.conf", "enroll-agent-check.service", "enroll-agent-check.timer",
         "enroll-controller-ensure.service", "enroll-controller-ensure.timer")
SECRET = 0o600
PUBLIC = 0o644
SPACE_MARGIN = 256 * 1024


@dataclass
class FlashOptions:
    bootfs: str
    hostname: str
    pin: str = ""
    token: str = ""
    controller_url: str = ""
    wifi: Wifi | None = None
    ssh_keys: list[str] = field(default_factory=list)
    ssh_user: str = ""
    method: str = "auto"
    controller_state: str = ""
    wheelhouse: str = ""
    docker_package: str = "docker.io"

    def __repr__(self) -> str:  # the token must not reach a log or traceback via repr
        return (f"FlashOptions(bootfs={self.bootfs!r}, hostname={self.hostname!r}, "
                f"method={self.method!r}, token={'<set>' if self.token else '<none>'})")


@dataclass
class ControllerState:
    pin: str
    hostname: str
    advertise_addr: str
    url: str
    files: dict[str, bytes]


@dataclass
class Plan:
    bootfs: BootFS
    method: str
    hostname: str
    pin: str
    role: str
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    copies: dict[str, tuple[Path, int]] = field(default_factory=dict)
    deletions: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def payload(self) -> set[str]:
        return {p for p in [*self.files, *self.copies] if p.startswith(PAYLOAD_DIR + "/")}


# ---- checks ---------------------------------------------------------------------------

def check_hostname(hostname: str) -> str:
    if not hostname:
        raise FlashError("--hostname is required: the name this Pi will have (and that the "
                         "controller's rules match)")
    try:
        validate_hostname(hostname)
    except WireError as exc:
        raise FlashError(f"--hostname: {exc.message}") from None
    if "." in hostname:
        raise FlashError(f"--hostname {hostname!r}: give the Pi's short name (one label, "
                         "without dots); mDNS adds .local")
    return hostname


def check_pin(pin: str) -> str:
    try:
        return check_pin_format(pin)
    except WireError as exc:
        raise FlashError(f"--pin: {exc.message}") from None


def check_token(token: str) -> str:
    token = token.strip()
    if token.startswith("sea_"):
        raise FlashError("that is an admin token; a Pi gets a bootstrap token "
                         "('enrollctl tokens create')")
    if not TOKEN.match(token):
        raise FlashError("the bootstrap token is not one made by 'enrollctl tokens create' "
                         "(seb_ followed by 43 letters, digits, '-' or '_')")
    return token


def check_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https" or not parsed.hostname or any(c.isspace() for c in url):
        raise FlashError(f"--controller-url must be an https:// URL such as "
                         f"https://192.168.1.10:8443, not {url!r}")
    return url.rstrip("/")


def check_ssh_keys(text: str, source: str) -> list[str]:
    if "PRIVATE KEY" in text:
        raise FlashError(f"{source} is a private key; give the public key (the .pub file)")
    keys = [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise FlashError(f"{source} holds no SSH public key")
    for i, key in enumerate(keys, 1):
        if not SSH_KEY.match(key):
            raise FlashError(f"{source} line {i} is not an OpenSSH public key "
                             "(ssh-ed25519 AAAA... comment)")
    return keys


def read_controller_state(path: str, hostname: str) -> ControllerState:
    """A state dir made by `enroll-controller init --no-swarm-init --state-dir DIR`."""
    from cryptography import x509

    from controller.config import ConfigError as ControllerConfigError
    from controller.config import load_config

    d = Path(path)
    if not d.is_dir():
        raise FlashError(f"--controller-state {d}: no such directory (make it with "
                         "'enroll-controller init --no-swarm-init --state-dir DIR')")
    try:
        config = load_config(d)
    except ControllerConfigError as exc:
        raise FlashError(f"--controller-state: {exc}") from None
    if "/" in config.rules or config.rules.startswith("."):
        raise FlashError(f"--controller-state: rules = {config.rules!r} must name a file in "
                         "the state dir")
    missing = [n for n in [*CONTROLLER_FILES, config.rules, "state.db"]
               if not (d / n).is_file()]
    if missing:
        raise FlashError(f"--controller-state {d} is incomplete: no {', '.join(missing)} "
                         "(run 'enroll-controller init --no-swarm-init --state-dir DIR')")
    if config.hostname.lower() != hostname.lower():
        raise FlashError(f"--controller-state {d} was made for hostname {config.hostname!r} "
                         f"(its TLS certificate names it); flash with --hostname "
                         f"{config.hostname}")
    # everything in it (rules, baseline, ...); the database as one consistent snapshot
    names = sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                   and not p.name.startswith("state.db"))
    try:
        pin = pin_of_certificate(x509.load_pem_x509_certificate((d / "ca.pem").read_bytes()))
        files = {n: (d / n).read_bytes() for n in names}
    except (OSError, ValueError) as exc:
        raise FlashError(f"--controller-state {d}: cannot read it ({exc})") from None
    files["state.db"] = _snapshot(d / "state.db")
    return ControllerState(pin, config.hostname, config.advertise_addr, config.url, files)


def _snapshot(db: Path) -> bytes:
    """One consistent file of a SQLite database in WAL mode (no -wal/-shm to carry)."""
    with tempfile.TemporaryDirectory(prefix="swarm-enroll-flash-") as tmp:
        copy = Path(tmp) / "state.db"
        try:
            src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            dst = sqlite3.connect(copy)
            try:
                if not src.execute("PRAGMA user_version").fetchone()[0]:
                    raise FlashError(f"{db} is not a swarm-enroll database")
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.Error as exc:
            raise FlashError(f"{db}: cannot read the database ({exc})") from None
        return copy.read_bytes()


# ---- the plan -------------------------------------------------------------------------

def _resource(name: str) -> bytes:
    return resources.files("deploy").joinpath(name).read_bytes()


def _env(values: dict[str, str]) -> bytes:
    lines = ["# swarm-enroll first-boot settings, written by 'enrollctl flash' (no secrets)"]
    lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    return ("\n".join(lines) + "\n").encode()


def _old_chain(bootfs: BootFS) -> str:
    """The taken-over systemd.run script recorded by an earlier flash of this card."""
    try:
        text = read_card(bootfs.path / PAYLOAD_DIR / "firstboot.env").decode()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in text.splitlines():
        if line.startswith("SE_CHAIN="):
            parts = shlex.split(line.removeprefix("SE_CHAIN="))
            return parts[0] if parts else ""
    return ""


def _chain_on_card(bootfs: BootFS, command: str) -> str:
    """The card-relative path of another first-run script the kernel would have run."""
    parts = command.strip('"').split()
    path = parts[0] if parts else ""
    for prefix in ("/boot/firmware/", "/boot/"):
        if path.startswith(prefix):
            rel = path.removeprefix(prefix)
            if rel and ".." not in rel.split("/") and (bootfs.path / rel).is_file():
                return rel
    raise FlashError(f"cmdline.txt already runs {command!r} at boot and that script is not on "
                     "this card; remove that systemd.run= argument first")


def _pristine(bootfs: BootFS, name: str) -> str | None:
    """The card's own version of a cloud-init file (None: the card has none)."""
    path = bootfs.path / name
    if not path.is_file():
        return None
    text = read_card(path).decode(errors="replace")
    if not cloudinit.ours(text):
        return text
    backup = backup_path(path)
    return read_card(backup).decode(errors="replace") if backup.is_file() else None


def make_plan(opts: FlashOptions, wheel: Path | str | None) -> Plan:
    """Check everything and compute the card; with wheel None, only check (no wheel yet)."""
    bootfs = open_bootfs(opts.bootfs)
    hostname = check_hostname(opts.hostname)
    state = read_controller_state(opts.controller_state, hostname) \
        if opts.controller_state else None
    if state is None and not opts.pin:
        raise FlashError("no CA pin: give --pin (printed by 'enroll-controller init') or "
                         "--controller-state DIR")
    pin = check_pin(opts.pin) if opts.pin else ""
    if state is not None:
        if pin and pin != state.pin:
            raise FlashError(f"--pin does not match the CA of --controller-state "
                             f"{opts.controller_state} ({state.pin})")
        pin = state.pin
    token = check_token(opts.token) if opts.token else ""
    url = check_url(opts.controller_url) if opts.controller_url else ""
    method = bootfs.method(opts.method)
    if opts.ssh_user and not USER.match(opts.ssh_user):
        raise FlashError(f"--ssh-user {opts.ssh_user!r} is not a valid user name")
    for key in opts.ssh_keys:
        if not SSH_KEY.match(key):
            raise FlashError("an SSH key is not an OpenSSH public key")
    if not PACKAGE.match(opts.docker_package):
        raise FlashError(f"--docker-package {opts.docker_package!r} is not a package name")
    wheel_path, version = check_wheel(wheel) if wheel is not None else (None, "")
    wheelhouse = check_wheelhouse(opts.wheelhouse) if opts.wheelhouse else []

    role = "controller" if state else "agent"
    plan = Plan(bootfs, method, hostname, pin, role)
    wifi = opts.wifi

    # the agent config: checked by the agent's own parser, so the Pi will accept it
    values = {"ca_pin": pin}
    if token:
        values["bootstrap_token"] = token
    if url:
        values["controller_url"] = url
    try:
        parse_config(values)
    except ConfigError as exc:
        raise FlashError(f"the agent config would be refused: {exc}") from None
    agent_toml = (
        f"# swarm-enroll agent config for {hostname}, written by 'enrollctl flash'.\n"
        "# First boot moves it to /etc/swarm-enroll/agent.toml (0600) and deletes it here.\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    )

    # cmdline.txt: the hook (firstrun) and the Wi-Fi country
    cmdline_path = bootfs.path / "cmdline.txt"
    try:
        cmdline_text = read_card(cmdline_path).decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise FlashError(f"cannot read {cmdline_path} ({exc})") from None
    edit = edit_cmdline(cmdline_text, hook=method == "firstrun",
                        regdom=wifi.country if wifi else None)
    chain = ""
    if method == "firstrun":
        chain = _chain_on_card(bootfs, edit.foreign_run) if edit.foreign_run \
            else _old_chain(bootfs)
        if chain and not (bootfs.path / chain).is_file():
            chain = ""
    if edit.text != cmdline_text:
        plan.files["cmdline.txt"] = (edit.text.encode(), PUBLIC)
        plan.backups.append("cmdline.txt")

    # cloud-init files: ours when the method is cloud-init, the card's own otherwise
    wanted: dict[str, str | None] = {name: None for name in CLOUD_INIT_FILES}
    if method == "cloud-init":
        base = cloudinit.load_cloud_config(_pristine(bootfs, "user-data") or "")
        user_data = cloudinit.merge_user_data(base, hostname, opts.ssh_keys, opts.ssh_user)
        wanted["user-data"] = cloudinit.dump(user_data, "user-data", cloud_config=True)
        if wifi:
            wanted["network-config"] = cloudinit.dump(network_config(wifi), "network-config")
        if _pristine(bootfs, "meta-data") is None:
            wanted["meta-data"] = cloudinit.dump(cloudinit.meta_data(hostname), "meta-data")
    for name, text in wanted.items():
        path = bootfs.path / name
        current = read_card(path).decode(errors="replace") if path.is_file() else None
        if text is not None:
            if text != current:
                secret = name == "network-config"
                plan.files[name] = (text.encode(), SECRET if secret else PUBLIC)
                plan.backups.append(name)
        elif current is not None and cloudinit.ours(current):  # undo an earlier flash
            pristine = _pristine(bootfs, name)
            if pristine is None:
                plan.deletions.append(name)
            else:
                plan.files[name] = (pristine.encode(), PUBLIC)

    # the payload
    p = PAYLOAD_DIR + "/"
    plan.files[p + "firstboot.sh"] = (_resource("firstboot/firstboot.sh"), 0o755)
    plan.files[p + "README.txt"] = (_resource("firstboot/README.txt"), PUBLIC)
    for unit in UNITS:
        plan.files[p + "systemd/" + unit] = (_resource("systemd/" + unit), PUBLIC)
    plan.files[p + "agent.toml"] = (agent_toml.encode(), SECRET)
    if wheel_path is not None:
        plan.copies[p + "dist/" + wheel_path.name] = (wheel_path, PUBLIC)
    for w in wheelhouse:
        plan.copies[p + "wheelhouse/" + w.name] = (w, PUBLIC)
    if method == "firstrun" and opts.ssh_keys:
        plan.files[p + "authorized_keys"] = (("\n".join(opts.ssh_keys) + "\n").encode(), PUBLIC)
    if method == "firstrun" and wifi:
        plan.files[p + "wifi/swarm-enroll-wifi.nmconnection"] = (nm_keyfile(wifi).encode(),
                                                                 SECRET)
        plan.files[p + "wifi/wpa_supplicant.conf"] = (wpa_supplicant_conf(wifi).encode(),
                                                      SECRET)
    if state:
        for name, data in state.files.items():
            plan.files[p + "controller/" + name] = (data, SECRET)
    plan.files[p + "firstboot.env"] = (_env({
        "SE_VERSION": version,
        "SE_HOSTNAME": hostname,
        "SE_METHOD": method,
        "SE_ROLE": role,
        "SE_WHEEL": wheel_path.name if wheel_path else "",
        "SE_WHEELHOUSE": "1" if wheelhouse else "0",
        "SE_DOCKER_PACKAGE": opts.docker_package,
        "SE_SSH": "1" if opts.ssh_keys else "0",
        "SE_SSH_USER": opts.ssh_user,
        "SE_WIFI": "1" if wifi else "0",
        "SE_CHAIN": chain,
        "SE_ADVERTISE_ADDR": state.advertise_addr if state else "",
    }), PUBLIC)

    if wheel_path is not None:
        _check_space(plan)
        _summarise(plan, opts, state, token, url, wifi, chain, wheel_path, wheelhouse)
    return plan


def _check_space(plan: Plan) -> None:
    root = plan.bootfs.path
    need = sum(len(data) for data, _ in plan.files.values())
    need += sum(src.stat().st_size for src, _ in plan.copies.values())
    need += sum((root / b).stat().st_size for b in plan.backups
                if (root / b).is_file() and not backup_path(root / b).exists())
    freed = sum(f.stat().st_size for f in (root / PAYLOAD_DIR).rglob("*") if f.is_file()) \
        if (root / PAYLOAD_DIR).is_dir() else 0
    freed += sum((root / n).stat().st_size for n in plan.files
                 if not n.startswith(PAYLOAD_DIR + "/") and (root / n).is_file())
    free = shutil.disk_usage(root).free
    if need - freed + SPACE_MARGIN > free:
        raise FlashError(f"the boot partition has {free // 1024} KiB free, "
                         f"{(need - freed + SPACE_MARGIN) // 1024} KiB are needed (leave out "
                         "--wheelhouse, or make room on the card)")


def _summarise(plan: Plan, opts: FlashOptions, state: ControllerState | None, token: str,
               url: str, wifi: Wifi | None, chain: str, wheel: Path,
               wheelhouse: list[Path]) -> None:
    s = plan.summary
    hook = ("cloud-init (user-data runs the first-boot script)" if plan.method == "cloud-init"
            else "first-run script hooked from cmdline.txt (systemd.run=)")
    s.append(f"first boot : {hook}")
    s.append(f"role       : {'controller (and agent)' if state else 'agent'}; CA pin "
             f"{plan.pin[:19]}...")
    how = "bootstrap token" if token else "no token (waits for approval unless a rule says auto)"
    s.append(f"enrollment : {how}; controller {url or 'found over mDNS'}")
    s.append(f"Wi-Fi      : {wifi.ssid!r} ({wifi.country}{', hidden' if wifi.hidden else ''})"
             if wifi else "Wi-Fi      : none (wired network)")
    if opts.ssh_keys:
        s.append(f"SSH        : {len(opts.ssh_keys)} key(s) for user "
                 f"{opts.ssh_user or 'the first user (else pi)'}")
    s.append(f"software   : {wheel.name}"
             + (f" + {len(wheelhouse)} wheels (offline install)" if wheelhouse else
                " (dependencies from the Pi's package index)")
             + f"; Docker from the OS package {opts.docker_package}")
    if chain:
        s.append(f"also runs  : {chain} first (another first-run script on this card)")
    if state:
        s.append(f"controller : {state.url} (give this Pi the address {state.advertise_addr}: "
                 "a DHCP reservation or a static lease)")


# ---- writing --------------------------------------------------------------------------

def apply(plan: Plan) -> None:
    if not any(rel.startswith(f"{PAYLOAD_DIR}/dist/") for rel in plan.copies):
        raise FlashError("internal: a plan made without a wheel cannot be written")
    root = plan.bootfs.path
    refuse_symlinks(root)  # again: the card may have changed while the wheel was built
    for name in plan.backups:
        backup_once(root / name)
    keep = plan.payload()
    payload = root / PAYLOAD_DIR
    if payload.is_dir():  # files of an earlier flash that this one does not write
        for f in sorted(payload.rglob("*"), reverse=True):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and rel not in keep:
                f.unlink()
            elif f.is_dir() and not any(k.startswith(rel + "/") for k in keep):
                f.rmdir()
    for rel, (src, mode) in sorted(plan.copies.items()):
        atomic_copy(src, root / rel, mode)
    for rel, (data, mode) in sorted(plan.files.items()):
        if rel.startswith(PAYLOAD_DIR + "/"):
            atomic_write(root / rel, data, mode)
    for rel, (data, mode) in sorted(plan.files.items()):
        if not rel.startswith(PAYLOAD_DIR + "/") and rel != "cmdline.txt":
            atomic_write(root / rel, data, mode)
    for rel in plan.deletions:
        (root / rel).unlink(missing_ok=True)
    if "cmdline.txt" in plan.files:
        data, mode = plan.files["cmdline.txt"]
        atomic_write(root / "cmdline.txt", data, mode)
    sync(root)
