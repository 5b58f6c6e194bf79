"""The baseline file: a strict subset of the compose / stack file format.

Supported, per service: `image` (a name, or a mapping of architecture to name),
`command`, `environment`, `ports` (short `published:target[/protocol]` or long syntax
with `mode: ingress | host`), `volumes` (bind mounts only), and under `deploy`: `mode`
(replicated | global), `replicas` (a number), `placement.constraints`,
`placement.max_replicas_per_node`, `update_config` and `rollback_config`. Anything else
is an error that names the service and the key: a key that would be silently ignored is
a service that silently runs differently from what its author wrote.

`replicas: managers` / `replicas: workers` (this project's first dialect) are read as
what they always meant: `mode: global` with a `node.role` constraint, so that Swarm
itself keeps one task per eligible node through joins, promotions and departures, with
no count for the controller to keep in step.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 256 * 1024
MAX_REPLICAS = 1000

# Architectures as Docker reports them for a node (Description.Platform.Architecture,
# the kernel's `uname -m`), with the names images and other tools use for them.
ARCHES = ("armv6l", "armv7l", "aarch64", "x86_64")
ARCH_ALIASES = {
    "armv6l": "armv6l", "armv6": "armv6l", "arm/v6": "armv6l", "armel": "armv6l",
    "armv7l": "armv7l", "armv7": "armv7l", "arm/v7": "armv7l", "armhf": "armv7l",
    "arm": "armv7l",
    "aarch64": "aarch64", "arm64": "aarch64", "arm64/v8": "aarch64",
    "x86_64": "x86_64", "amd64": "x86_64",
}
DEFAULT_ARCH_KEY = "default"

SERVICE_KEYS = ("image", "command", "environment", "ports", "volumes", "deploy")
DEPLOY_KEYS = ("mode", "replicas", "placement", "update_config", "rollback_config")
PLACEMENT_KEYS = ("constraints", "max_replicas_per_node")
# The old per-role replica keywords and the role constraint each one stands for.
ROLE_REPLICAS = {"managers": "manager", "workers": "worker"}
UPDATE_KEYS = ("parallelism", "delay", "failure_action", "monitor", "max_failure_ratio",
               "order")
PORT_KEYS = ("target", "published", "protocol", "mode")
VOLUME_KEYS = ("type", "source", "target", "read_only")
TOP_KEYS = ("version", "services")

PROTOCOLS = ("tcp", "udp", "sctp")
PUBLISH_MODES = ("ingress", "host")
ORDERS = ("stop-first", "start-first")
NODE_ROLES = ("manager", "worker")
CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os",
                   "node.platform.arch")
LABEL_PREFIXES = ("node.labels.", "engine.labels.")

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_SHORT_PORT = re.compile(r"^(\d{1,5}):(\d{1,5})(?:/([a-z]+))?$")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|!=)\s*(\S(?:.*\S)?)\s*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")
_ENV_KEY = re.compile(r"^[^=\s]+$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
       "m": 60_000_000_000, "h": 3_600_000_000_000}


class BaselineError(ValueError):
    """The baseline file is wrong; the message names the service and the key."""

    def __init__(self, problem: str, service: str = "", key: str = "", source: str = "") -> None:
        self.problem, self.service, self.key, self.source = problem, service, key, source
        where = []
        if service:
            where.append(f"service {service!r}")
        if key:
            where.append(f"key {key!r}")
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + (", ".join(where) + ": " if where else "") + problem)

    def to_json(self) -> dict[str, str]:
        return {"service": self.service, "key": self.key, "problem": self.problem}


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str  # "==" or "!="
    value: str

    @property
    def text(self) -> str:
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True)
class Port:
    target: int
    published: int
    protocol: str = "tcp"
    mode: str = "ingress"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class UpdatePolicy:
    """update_config / rollback_config; delay and monitor in nanoseconds (Docker's unit)."""

    parallelism: int = 1
    delay: int = 0
    failure_action: str = "pause"
    monitor: int = 5_000_000_000
    max_failure_ratio: float = 0.0
    order: str = "stop-first"


DEFAULT_UPDATE = UpdatePolicy(failure_action="rollback")
DEFAULT_ROLLBACK = UpdatePolicy(failure_action="pause")


@dataclass(frozen=True)
class ServiceDef:
    name: str
    image: str = ""  # the image for every architecture not in `images`
    images: tuple[tuple[str, str], ...] = ()  # (arch, image), in file order
    mode: str = "replicated"
    replicas: int = 1  # replicated mode only; 0 for global services
    constraints: tuple[Constraint, ...] = ()
    max_per_node: int = 0  # placement.max_replicas_per_node; 0: no limit
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    environment: tuple[str, ...] = ()  # "KEY=value", sorted by key
    command: tuple[str, ...] = ()
    update: UpdatePolicy = DEFAULT_UPDATE
    rollback: UpdatePolicy = DEFAULT_ROLLBACK

    def image_for(self, arch: str) -> str:
        """The image for a node of this architecture ("" when none is declared)."""
        arch = ARCH_ALIASES.get(arch.lower(), arch.lower())
        return dict(self.images).get(arch, self.image)

    @property
    def all_images(self) -> list[str]:
        return list(dict.fromkeys([i for _, i in self.images] + ([self.image] if self.image
                                                                   else [])))


@dataclass(frozen=True)
class Baseline:
    services: tuple[ServiceDef, ...] = field(default_factory=tuple)
    source: str = ""

    def names(self) -> list[str]:
        return [s.name for s in self.services]


# ---- YAML ------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
            if isinstance(key, str | int | float | bool):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def default_baseline_text() -> bytes:
    """deploy/baseline.yml as installed with the package: viz and nginx."""
    return resources.files("deploy").joinpath("baseline.yml").read_bytes()


def load_baseline(path: Path) -> Baseline:
    """Read and validate a baseline file; BaselineError (naming the file) on any problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BaselineError(f"no baseline file at {path}", source=str(path)) from None
    except OSError as exc:
        raise BaselineError(f"cannot read it: {exc.strerror or exc}", source=str(path)) from None
    return parse_baseline(raw, source=str(path))


def parse_baseline(text: str | bytes, source: str = "baseline") -> Baseline:
    if len(text) > MAX_FILE_BYTES:
        raise BaselineError(f"larger than {MAX_FILE_BYTES // 1024} KiB", source=source)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BaselineError("not UTF-8 text", source=source) from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BaselineError(f"not valid YAML: {_yaml_problem(exc)}", source=source) from None
    try:
        return _parse_doc(doc, source)
    except BaselineError as exc:
        if exc.source:
            raise
        raise BaselineError(exc.problem, exc.service, exc.key, source) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text


# ---- validation ------------------------------------------------------------------------


def _parse_doc(doc: Any, source: str) -> Baseline:
    if doc is None:
        raise BaselineError("the file is empty; declare 'services:'")
    if not isinstance(doc, dict):
        raise BaselineError("the file must be a mapping with a 'services' key")
    for key in doc:
        if key not in TOP_KEYS:
            raise BaselineError(f"unknown top-level key (supported: {', '.join(TOP_KEYS)}; "
                                "networks, volumes, configs and secrets are not)", key=str(key))
    if "version" in doc and not isinstance(doc["version"], str | int | float):
        raise BaselineError("must be a string such as \"3.8\"", key="version")
    services = doc.get("services")
    if services is None:
        raise BaselineError("missing; declare at least 'services: {}'", key="services")
    if not isinstance(services, dict):
        raise BaselineError("must be a mapping of service name to service", key="services")
    parsed = []
    for name, body in services.items():
        if not isinstance(name, str) or not _SERVICE_NAME.match(name):
            raise BaselineError("service names are 1-63 letters, digits, '_', '.' or '-', "
                                "starting with a letter or digit", service=str(name))
        parsed.append(_parse_service(name, body))
    seen: dict[str, str] = {}
    for s in parsed:
        if s.name.lower() in seen:
            raise BaselineError(f"declared twice (as {seen[s.name.lower()]!r} too; service "
                                "names are case-insensitive)", service=s.name)
        seen[s.name.lower()] = s.name
    _check_port_clashes(parsed)
    return Baseline(tuple(parsed), source)


def _parse_service(name: str, body: Any) -> ServiceDef:
    def fail(problem: str, key: str = "") -> BaselineError:
        return BaselineError(problem, service=name, key=key)

    if not isinstance(body, dict):
        raise fail("must be a mapping with at least 'image'")
    for key in body:
        if key not in SERVICE_KEYS:
            raise fail(f"unknown key (supported: {', '.join(SERVICE_KEYS)})", str(key))
    if "image" not in body:
        raise fail("missing", "image")
    image, images = _parse_image(body["image"], fail)
    deploy = body.get("deploy") or {}
    if not isinstance(deploy, dict):
        raise fail("must be a mapping", "deploy")
    for key in deploy:
        if key not in DEPLOY_KEYS:
            raise fail(f"unknown key (supported under deploy: {', '.join(DEPLOY_KEYS)})",
                       f"deploy.{key}")
    mode = deploy.get("mode", "replicated")
    if mode not in ("replicated", "global"):
        raise fail("must be 'replicated' or 'global'", "deploy.mode")
    replicas = _parse_replicas(deploy, mode, fail)
    constraints, max_per_node = _parse_placement(deploy.get("placement"), fail)
    if isinstance(replicas, str):  # managers | workers: global, constrained to that role
        mode, role = "global", ROLE_REPLICAS[replicas]
        if any(c.key == "node.role" and c.op == "==" and c.value != role
               for c in constraints):
            raise fail(f"'replicas: {replicas}' means one task per {role}, but the "
                       f"placement constraints exclude every {role}", "deploy.replicas")
        constraints = tuple(dict.fromkeys((*constraints, Constraint("node.role", "==", role))))
        replicas = 0
    if max_per_node and mode == "global":
        raise fail("only for mode: replicated (a global service runs one task per node "
                   "already)", "deploy.placement.max_replicas_per_node")
    return ServiceDef(
        name=name, image=image, images=images, mode=mode, replicas=replicas,
        constraints=constraints, max_per_node=max_per_node,
        ports=_parse_ports(body.get("ports"), fail),
        mounts=_parse_volumes(body.get("volumes"), fail),
        environment=_parse_environment(body.get("environment"), fail),
        command=_parse_command(body.get("command"), fail),
        update=_parse_update(deploy.get("update_config"), "deploy.update_config",
                             DEFAULT_UPDATE, ("continue", "pause", "rollback"), fail),
        rollback=_parse_update(deploy.get("rollback_config"), "deploy.rollback_config",
                               DEFAULT_ROLLBACK, ("continue", "pause"), fail),
    )


def _check_image(value: Any, key: str, fail: Any) -> str:
    if not isinstance(value, str) or not _IMAGE.match(value):
        raise fail(f"{value!r} is not an image name such as nginx:latest", key)
    return value


def _parse_image(value: Any, fail: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    if isinstance(value, str):
        return _check_image(value, "image", fail), ()
    if not isinstance(value, dict) or not value:
        raise fail("must be an image name, or a mapping of architecture to image name", "image")
    default = ""
    images: dict[str, str] = {}
    for arch, image in value.items():
        key = f"image.{arch}"
        if arch == DEFAULT_ARCH_KEY:
            default = _check_image(image, key, fail)
            continue
        canonical = ARCH_ALIASES.get(str(arch).lower()) if isinstance(arch, str) else None
        if canonical is None:
            raise fail(f"unknown architecture (use {', '.join(ARCHES)} or "
                       f"{DEFAULT_ARCH_KEY}; aliases: arm64, amd64, armhf, arm/v7, arm/v6)", key)
        if canonical in images:
            raise fail(f"architecture {canonical} given twice", key)
        images[canonical] = _check_image(image, key, fail)
    return default, tuple(images.items())


def _parse_replicas(deploy: dict[str, Any], mode: str, fail: Any) -> int | str:
    if "replicas" not in deploy:
        return 1 if mode == "replicated" else 0
    if mode == "global":
        raise fail("not allowed with mode: global (a global service runs one task per "
                   "eligible node)", "deploy.replicas")
    value = deploy["replicas"]
    if value in ROLE_REPLICAS:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
        raise fail(f"must be a number from 0 to {MAX_REPLICAS} (for one task per manager or "
                   "per worker, write mode: global with a node.role constraint)",
                   "deploy.replicas")
    return value


def parse_constraint(text: Any) -> Constraint:
    """`node.role==manager` and friends; ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string such as 'node.role==manager'")
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a constraint: write <key>==<value> or "
                         "<key>!=<value>, e.g. node.role==manager")
    key, op, value = match.groups()
    lowered = key.lower()
    if lowered in CONSTRAINT_KEYS:
        key = lowered
    else:
        prefix = next((p for p in LABEL_PREFIXES if lowered.startswith(p)), None)
        if prefix is None or not _LABEL_KEY.match(key[len(prefix):]):
            raise ValueError(f"{text!r}: unknown key {key!r} (use {', '.join(CONSTRAINT_KEYS)}"
                             ", node.labels.<label> or engine.labels.<label>)")
        key = prefix + key[len(prefix):]  # the label name keeps its case, as in Swarm
    if key == "node.role" and value.lower() not in NODE_ROLES:
        raise ValueError(f"{text!r}: node.role is manager or worker")
    if key == "node.role":
        value = value.lower()
    return Constraint(key, op, value)


def _parse_placement(value: Any, fail: Any) -> tuple[tuple[Constraint, ...], int]:
    if value is None:
        return (), 0
    if not isinstance(value, dict):
        raise fail("must be a mapping with 'constraints'", "deploy.placement")
    for key in value:
        if key not in PLACEMENT_KEYS:
            raise fail(f"unknown key (supported under placement: {', '.join(PLACEMENT_KEYS)})",
                       f"deploy.placement.{key}")
    max_per_node = value.get("max_replicas_per_node", 0)
    if (isinstance(max_per_node, bool) or not isinstance(max_per_node, int)
            or not 0 <= max_per_node <= MAX_REPLICAS):
        raise fail(f"must be a number from 0 (no limit) to {MAX_REPLICAS}",
                   "deploy.placement.max_replicas_per_node")
    raw = value.get("constraints") or []
    if not isinstance(raw, list):
        raise fail("must be a list such as ['node.role==manager']",
                   "deploy.placement.constraints")
    constraints = []
    for i, item in enumerate(raw):
        try:
            constraints.append(parse_constraint(item))
        except ValueError as exc:
            raise fail(str(exc), f"deploy.placement.constraints[{i}]") from None
    return tuple(dict.fromkeys(constraints)), max_per_node


def _port_number(value: Any, key: str, what: str, fail: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise fail(f"{what} port {value!r} is out of range (1-65535)", key)
    return value


def _parse_ports(value: Any, fail: Any) -> tuple[Port, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail("must be a list", "ports")
    ports = []
    for i, item in enumerate(value):
        key = f"ports[{i}]"
        if isinstance(item, str):
            match = _SHORT_PORT.match(item.strip())
            if not match:
                raise fail(f"{item!r}: short syntax is 'published:target' or "
                           "'published:target/protocol' (ranges and host addresses are not "
                           "supported; use the long syntax for mode: host)", key)
            published = _port_number(int(match.group(1)), key, "published", fail)
            target = _port_number(int(match.group(2)), key, "target", fail)
            protocol = match.group(3) or "tcp"
            if protocol not in PROTOCOLS:
                raise fail(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}", key)
            ports.append(Port(target, published, protocol, "ingress"))
        elif isinstance(item, dict):
            for k in item:
                if k not in PORT_KEYS:
                    raise fail(f"unknown key (supported: {', '.join(PORT_KEYS)})", f"{key}.{k}")
            if "target" not in item or "published" not in item:
                raise fail("needs both 'target' and 'published' (the baseline publishes fixed "
                           "ports)", key)
            target = _port_number(item["target"], f"{key}.target", "target", fail)
            published = _port_number(item["published"], f"{key}.published", "published", fail)
            protocol = item.get("protocol", "tcp")
            if protocol not in PROTOCOLS:
                raise fail(f"must be one of {', '.join(PROTOCOLS)}", f"{key}.protocol")
            mode = item.get("mode", "ingress")
            if mode not in PUBLISH_MODES:
                raise fail("must be 'ingress' (the routing mesh) or 'host' (the node's own "
                           "port)", f"{key}.mode")
            ports.append(Port(target, published, protocol, mode))
        elif isinstance(item, int) and not isinstance(item, bool):
            raise fail(f"{item!r} is a bare number: write 'published:target' in quotes "
                       "(YAML reads an unquoted 22:22 as the number 1342)", key)
        else:
            raise fail("must be 'published:target' or a mapping with target and published",
                       key)
    seen: set[tuple[int, str]] = set()
    for port in ports:
        if (port.published, port.protocol) in seen:
            raise fail(f"published port {port.published}/{port.protocol} is given twice",
                       "ports")
        seen.add((port.published, port.protocol))
    return tuple(ports)


def _check_path(value: Any, key: str, what: str, fail: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise fail(f"{what} {value!r} must be an absolute path (only bind mounts are "
                   "supported; named volumes are not)", key)
    return value.rstrip("/") or "/"


def _parse_volumes(value: Any, fail: Any) -> tuple[Mount, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail("must be a list", "volumes")
    mounts = []
    for i, item in enumerate(value):
        key = f"volumes[{i}]"
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise fail(f"{item!r}: short syntax is '/host/path:/container/path[:ro]'", key)
            source = _check_path(parts[0], key, "source", fail)
            target = _check_path(parts[1], key, "target", fail)
            mounts.append(Mount(source, target, len(parts) == 3 and parts[2] == "ro"))
        elif isinstance(item, dict):
            for k in item:
                if k not in VOLUME_KEYS:
                    raise fail(f"unknown key (supported: {', '.join(VOLUME_KEYS)})",
                               f"{key}.{k}")
            if item.get("type", "bind") != "bind":
                raise fail("only 'bind' is supported", f"{key}.type")
            if "source" not in item or "target" not in item:
                raise fail("needs 'source' and 'target'", key)
            read_only = item.get("read_only", False)
            if not isinstance(read_only, bool):
                raise fail("must be true or false", f"{key}.read_only")
            mounts.append(Mount(_check_path(item["source"], f"{key}.source", "source", fail),
                                _check_path(item["target"], f"{key}.target", "target", fail),
                                read_only))
        else:
            raise fail("must be '/host/path:/container/path' or a mapping", key)
    targets = [m.target for m in mounts]
    for t in targets:
        if targets.count(t) > 1:
            raise fail(f"target {t} is mounted twice", "volumes")
    return tuple(mounts)


def _env_value(value: Any, key: str, fail: Any) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        raise fail("must be a string or a number (quote true/false/yes/no; a value taken "
                   "from the controller's environment is not supported)", key)
    return str(value)


def _parse_environment(value: Any, fail: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    pairs: dict[str, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not _ENV_KEY.match(k):
                raise fail("variable names cannot be empty or contain '=' or spaces",
                           f"environment.{k}")
            pairs[k] = _env_value(v, f"environment.{k}", fail)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str) or "=" not in item:
                raise fail("must be 'NAME=value'", f"environment[{i}]")
            k, _, v = item.partition("=")
            if not _ENV_KEY.match(k):
                raise fail("variable names cannot be empty or contain spaces",
                           f"environment[{i}]")
            if k in pairs:
                raise fail(f"{k} is set twice", f"environment[{i}]")
            pairs[k] = v
    else:
        raise fail("must be a mapping NAME: value or a list of 'NAME=value'", "environment")
    return tuple(f"{k}={pairs[k]}" for k in sorted(pairs))


def _parse_command(value: Any, fail: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise fail(f"cannot be split into words: {exc}", "command") from None
        if not parts:
            raise fail("is empty", "command")
        return tuple(parts)
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise fail("must be a string or a non-empty list of strings", "command")


def parse_duration(value: Any) -> int:
    """'10s', '1m30s', '500ms' (Go / compose durations) or 0 -> nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a duration such as 10s, 1m30s or 500ms")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _NS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"{value!r} is not a duration such as 10s, 1m30s or 500ms")
    return int(total)


def _parse_update(value: Any, where: str, default: UpdatePolicy, actions: tuple[str, ...],
                  fail: Any) -> UpdatePolicy:
    if value is None:
        return default
    if not isinstance(value, dict):
        raise fail("must be a mapping", where)
    for key in value:
        if key not in UPDATE_KEYS:
            raise fail(f"unknown key (supported: {', '.join(UPDATE_KEYS)})", f"{where}.{key}")
    fields: dict[str, Any] = {}
    if "parallelism" in value:
        p = value["parallelism"]
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= MAX_REPLICAS:
            raise fail("must be a number from 0 (all at once) upwards", f"{where}.parallelism")
        fields["parallelism"] = p
    for key in ("delay", "monitor"):
        if key in value:
            try:
                fields[key] = parse_duration(value[key])
            except ValueError as exc:
                raise fail(str(exc), f"{where}.{key}") from None
    if "failure_action" in value:
        if value["failure_action"] not in actions:
            raise fail(f"must be one of {', '.join(actions)}", f"{where}.failure_action")
        fields["failure_action"] = value["failure_action"]
    if "max_failure_ratio" in value:
        r = value["max_failure_ratio"]
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1:
            raise fail("must be a number from 0 to 1", f"{where}.max_failure_ratio")
        fields["max_failure_ratio"] = float(r)
    if "order" in value:
        if value["order"] not in ORDERS:
            raise fail(f"must be one of {', '.join(ORDERS)}", f"{where}.order")
        fields["order"] = value["order"]
    return UpdatePolicy(**{**default.__dict__, **fields})


def _check_port_clashes(services: list[ServiceDef]) -> None:
    """Two services cannot publish the same ingress port (Swarm would refuse the second)."""
    owner: dict[tuple[int, str], str] = {}
    for svc in services:
        for port in svc.ports:
            if port.mode != "ingress":
                continue
            key = (port.published, port.protocol)
            if key in owner:
                raise BaselineError(f"published port {port.published}/{port.protocol} is "
                                    f"already published by service {owner[key]!r}",
                                    service=svc.name, key="ports")
            owner[key] = svc.name
