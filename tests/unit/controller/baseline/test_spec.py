"""The baseline file parser: what it accepts, and a clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.baseline.spec import (
    DEFAULT_ROLLBACK,
    BaselineError,
    Constraint,
    Mount,
    Port,
    UpdatePolicy,
    default_baseline_text,
    load_baseline,
    parse_baseline,
    parse_duration,
)
from controller.config import DEFAULT_VIZ_SOCKET_DIR, VIZ_SOCKET_NAME
from deploy.lab.config import load_cluster
from deploy.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[4]


def svc(body: str, name: str = "web") -> str:
    """A file with one service whose body is `body` (indented by the caller's 4 spaces)."""
    return f"services:\n  {name}:\n{body}"


def test_default_file_is_the_reference_setup() -> None:
    baseline = load_baseline(ROOT / "deploy" / "baseline.yml")
    assert baseline.names() == ["viz", "nginx"]
    viz, nginx = baseline.services
    assert viz.mode == "global"  # one per manager, kept so by Swarm itself
    assert viz.constraints == (Constraint("node.role", "==", "manager"),)
    assert viz.ports == (Port(8080, 8080, "tcp", "ingress"),)
    # never the Docker socket: the controller's filtered API, at the path viz dials
    assert viz.mounts == (Mount(DEFAULT_VIZ_SOCKET_DIR, "/var/run", read_only=True),)
    assert f"/var/run/{VIZ_SOCKET_NAME}" == "/var/run/docker.sock"
    assert viz.image_for("armv6l") == viz.image_for("armv7l") == \
        "alexellis2/visualizer-arm:latest"
    assert viz.image_for("aarch64") == viz.image_for("amd64") == \
        "dockersamples/visualizer:latest"
    assert (nginx.image, nginx.replicas, nginx.ports) == ("nginx:latest", 15,
                                                          (Port(80, 80, "tcp", "ingress"),))
    assert nginx.update.failure_action == viz.update.failure_action == "rollback"
    assert default_baseline_text() == (ROOT / "deploy" / "baseline.yml").read_bytes()


def test_lab_file_publishes_in_host_mode() -> None:
    baseline = load_baseline(ROOT / "deploy" / "lab" / "baseline.yml")
    viz, nginx = baseline.services
    assert [p.mode for s in baseline.services for p in s.ports] == ["host", "host"]
    assert (viz.mode, nginx.mode) == ("global", "global")
    assert viz.constraints == (Constraint("node.role", "==", "manager"),)
    assert nginx.constraints == (Constraint("node.role", "==", "worker"),)
    # where the lab's controller (the `controller` of deploy/lab/cluster.toml) serves it
    controller = load_cluster(ROOT / "deploy" / "lab" / "cluster.toml").controller
    assert controller is not None
    socket_dir = Lab().daemon_spec(controller).viz_socket_dir
    assert viz.mounts == (Mount(str(socket_dir), "/var/run", read_only=True),)


def test_everything_supported() -> None:
    baseline = parse_baseline("""
version: "3.8"
services:
  app:
    image:
      arm64: example/app:arm64
      armhf: example/app:arm
      default: example/app:1.0
    command: ["serve", "--port", "80"]
    environment:
      B: "2"
      A: 1
    ports:
      - "8080:80"
      - "53:53/udp"
      - {target: 9000, published: 9001, protocol: tcp, mode: host}
    volumes:
      - /srv/data:/data:ro
      - {type: bind, source: /etc/app/, target: /etc/app, read_only: false}
    deploy:
      mode: replicated
      replicas: 3
      placement:
        constraints: ["node.labels.zone == rack-1", "engine.labels.Disk!=ssd", "NODE.ROLE==Worker"]
        max_replicas_per_node: 1
      update_config: {parallelism: 2, delay: 1m30s, failure_action: continue, monitor: 500ms,
                      max_failure_ratio: 0.5, order: start-first}
      rollback_config: {parallelism: 0, failure_action: continue}
  agent:
    image: example/agent
    command: run --verbose "two words"
    environment: ["X=a=b", "Y="]
    deploy:
      mode: global
""")
    app, agent = baseline.services
    assert app.image_for("aarch64") == "example/app:arm64"
    assert app.image_for("armv7l") == "example/app:arm"
    assert app.image_for("x86_64") == "example/app:1.0"
    assert app.command == ("serve", "--port", "80")
    assert app.environment == ("A=1", "B=2")
    assert app.ports == (Port(80, 8080), Port(53, 53, "udp"), Port(9000, 9001, "tcp", "host"))
    assert app.mounts == (Mount("/srv/data", "/data", True), Mount("/etc/app", "/etc/app"))
    assert (app.mode, app.replicas, app.max_per_node) == ("replicated", 3, 1)
    assert [c.text for c in app.constraints] == [
        "node.labels.zone==rack-1", "engine.labels.Disk!=ssd", "node.role==worker"]
    assert app.update == UpdatePolicy(2, 90_000_000_000, "continue", 500_000_000, 0.5,
                                      "start-first")
    assert app.rollback == UpdatePolicy(**{**DEFAULT_ROLLBACK.__dict__, "parallelism": 0,
                                           "failure_action": "continue"})
    assert agent.mode == "global"
    assert agent.command == ("run", "--verbose", "two words")
    assert agent.environment == ("X=a=b", "Y=")
    assert agent.update.failure_action == "rollback"  # the default


@pytest.mark.parametrize(("keyword", "role"), [("managers", "manager"), ("workers", "worker")])
def test_per_role_replicas_mean_global_with_a_role_constraint(keyword: str, role: str) -> None:
    """The first dialect's `replicas: managers|workers`: Swarm keeps one per node."""
    (web,) = parse_baseline(svc(f"    image: a\n    deploy: {{replicas: {keyword}}}\n")).services
    assert (web.mode, web.replicas, web.max_per_node) == ("global", 0, 0)
    assert web.constraints == (Constraint("node.role", "==", role),)
    (labelled,) = parse_baseline(svc(
        f"    image: a\n    deploy:\n      replicas: {keyword}\n      placement:\n"
        f"        constraints: [node.labels.zone==a, node.role=={role}]\n")).services
    assert [c.text for c in labelled.constraints] == ["node.labels.zone==a",
                                                      f"node.role=={role}"]


def test_defaults() -> None:
    (web,) = parse_baseline(svc("    image: nginx\n")).services
    assert (web.mode, web.replicas, web.ports, web.mounts, web.command) == (
        "replicated", 1, (), (), ())
    assert web.update.failure_action == "rollback"
    assert web.rollback.failure_action == "pause"


def test_empty_services_is_allowed() -> None:
    assert parse_baseline("services: {}\n").services == ()


# (file text, service named in the error, key named in the error, words in the message)
ERRORS = [
    ("services: [\n", "", "", "not valid YAML: line 2"),
    ("services:\n  web:\n    image: a\n   bad indent: 1\n", "", "", "not valid YAML"),
    ("services:\n  web:\n    image: a\n    image: b\n", "", "", "duplicate key 'image'"),
    ("", "", "", "empty"),
    ("- a\n", "", "", "mapping"),
    ("services: {}\nnetworks: {}\n", "", "networks", "unknown top-level key"),
    ("version: [1]\nservices: {}\n", "", "version", "string"),
    ("version: '3'\n", "", "services", "missing"),
    ("services: [web]\n", "", "services", "mapping"),
    ("services:\n  'bad name':\n    image: a\n", "bad name", "", "service names"),
    ("services:\n  web: nginx\n", "web", "", "mapping"),
    ("services:\n  web:\n    image: a\n  WEB:\n    image: b\n", "WEB", "", "declared twice"),
    (svc("    image: a\n    restart: always\n"), "web", "restart", "unknown key"),
    (svc("    image: a\n    healthcheck: {}\n"), "web", "healthcheck", "unknown key"),
    (svc("    command: x\n"), "web", "image", "missing"),
    (svc("    image: 'has space'\n"), "web", "image", "not an image name"),
    (svc("    image: ''\n"), "web", "image", "not an image name"),
    (svc("    image: {}\n"), "web", "image", "mapping of architecture"),
    (svc("    image: {mips: a}\n"), "web", "image.mips", "unknown architecture"),
    (svc("    image: {arm64: a, aarch64: b}\n"), "web", "image.aarch64", "twice"),
    (svc("    image: {arm64: 3}\n"), "web", "image.arm64", "not an image name"),
    (svc("    image: a\n    deploy: [1]\n"), "web", "deploy", "mapping"),
    (svc("    image: a\n    deploy: {resources: {}}\n"), "web", "deploy.resources",
     "unknown key"),
    (svc("    image: a\n    deploy: {mode: daemon}\n"), "web", "deploy.mode", "replicated"),
    (svc("    image: a\n    deploy: {replicas: -1}\n"), "web", "deploy.replicas", "number"),
    (svc("    image: a\n    deploy: {replicas: 1001}\n"), "web", "deploy.replicas", "number"),
    (svc("    image: a\n    deploy: {replicas: true}\n"), "web", "deploy.replicas", "number"),
    (svc("    image: a\n    deploy: {replicas: all}\n"), "web", "deploy.replicas",
     "mode: global with a node.role constraint"),
    (svc("    image: a\n    deploy: {replicas: workers, placement: {constraints: "
         "[node.role==manager]}}\n"), "web", "deploy.replicas", "exclude every worker"),
    (svc("    image: a\n    deploy: {mode: global, placement: {max_replicas_per_node: 1}}\n"),
     "web", "deploy.placement.max_replicas_per_node", "only for mode: replicated"),
    (svc("    image: a\n    deploy: {placement: {max_replicas_per_node: -1}}\n"), "web",
     "deploy.placement.max_replicas_per_node", "number from 0"),
    (svc("    image: a\n    deploy: {placement: {max_replicas_per_node: '1'}}\n"), "web",
     "deploy.placement.max_replicas_per_node", "number from 0"),
    (svc("    image: a\n    deploy: {mode: global, replicas: 2}\n"), "web", "deploy.replicas",
     "global"),
    (svc("    image: a\n    deploy: {placement: [x]}\n"), "web", "deploy.placement", "mapping"),
    (svc("    image: a\n    deploy: {placement: {preferences: []}}\n"), "web",
     "deploy.placement.preferences", "unknown key"),
    (svc("    image: a\n    deploy: {placement: {constraints: node.role==manager}}\n"), "web",
     "deploy.placement.constraints", "list"),
    (svc("    image: a\n    deploy: {placement: {constraints: [node.role=manager]}}\n"), "web",
     "deploy.placement.constraints[0]", "not a constraint"),
    (svc("    image: a\n    deploy: {placement: {constraints: [node.rol==manager]}}\n"), "web",
     "deploy.placement.constraints[0]", "unknown key 'node.rol'"),
    (svc("    image: a\n    deploy: {placement: {constraints: [node.role==boss]}}\n"), "web",
     "deploy.placement.constraints[0]", "manager or worker"),
    (svc("    image: a\n    deploy: {placement: {constraints: ['node.labels.==x']}}\n"),
     "web", "deploy.placement.constraints[0]", "unknown key"),
    (svc("    image: a\n    deploy: {placement: {constraints: ['node.role==']}}\n"),
     "web", "deploy.placement.constraints[0]", "not a constraint"),
    (svc("    image: a\n    deploy: {placement: {constraints: [42]}}\n"), "web",
     "deploy.placement.constraints[0]", "not a string"),
    (svc("    image: a\n    ports: '80:80'\n"), "web", "ports", "list"),
    (svc("    image: a\n    ports: ['80:70000']\n"), "web", "ports[0]", "out of range"),
    (svc("    image: a\n    ports: ['0:80']\n"), "web", "ports[0]", "out of range"),
    (svc("    image: a\n    ports: ['80-81:80-81']\n"), "web", "ports[0]", "short syntax"),
    (svc("    image: a\n    ports: ['127.0.0.1:80:80']\n"), "web", "ports[0]", "short syntax"),
    (svc("    image: a\n    ports: ['80']\n"), "web", "ports[0]", "short syntax"),
    (svc("    image: a\n    ports: ['80:80/icmp']\n"), "web", "ports[0]", "protocol"),
    (svc("    image: a\n    ports: [22:22]\n"), "web", "ports[0]", "bare number"),
    (svc("    image: a\n    ports: [[80, 80]]\n"), "web", "ports[0]", "published:target"),
    (svc("    image: a\n    ports: [{target: 80}]\n"), "web", "ports[0]", "published"),
    (svc("    image: a\n    ports: [{target: 80, published: 80, host_ip: 0.0.0.0}]\n"), "web",
     "ports[0].host_ip", "unknown key"),
    (svc("    image: a\n    ports: [{target: 80, published: 65536}]\n"), "web",
     "ports[0].published", "out of range"),
    (svc("    image: a\n    ports: [{target: 0, published: 80}]\n"), "web",
     "ports[0].target", "out of range"),
    (svc("    image: a\n    ports: [{target: 80, published: 80, mode: bridge}]\n"), "web",
     "ports[0].mode", "host"),
    (svc("    image: a\n    ports: [{target: 80, published: 80, protocol: icmp}]\n"), "web",
     "ports[0].protocol", "tcp"),
    (svc("    image: a\n    ports: ['80:80', '80:81']\n"), "web", "ports", "twice"),
    ("services:\n  a:\n    image: a\n    ports: ['80:80']\n  b:\n    image: b\n"
     "    ports: ['80:8080']\n", "b", "ports", "already published by service 'a'"),
    (svc("    image: a\n    volumes: /a:/b\n"), "web", "volumes", "list"),
    (svc("    image: a\n    volumes: ['data:/data']\n"), "web", "volumes[0]", "named volumes"),
    (svc("    image: a\n    volumes: ['/a:data']\n"), "web", "volumes[0]", "absolute path"),
    (svc("    image: a\n    volumes: ['/a:/b:rx']\n"), "web", "volumes[0]", "short syntax"),
    (svc("    image: a\n    volumes: ['/a']\n"), "web", "volumes[0]", "short syntax"),
    (svc("    image: a\n    volumes: [{type: volume, source: d, target: /d}]\n"), "web",
     "volumes[0].type", "bind"),
    (svc("    image: a\n    volumes: [{source: /a, target: /b, consistency: cached}]\n"),
     "web", "volumes[0].consistency", "unknown key"),
    (svc("    image: a\n    volumes: [{source: /a}]\n"), "web", "volumes[0]", "target"),
    (svc("    image: a\n    volumes: [{source: /a, target: /b, read_only: 'yes'}]\n"), "web",
     "volumes[0].read_only", "true or false"),
    (svc("    image: a\n    volumes: ['/a:/b', '/c:/b']\n"), "web", "volumes", "twice"),
    (svc("    image: a\n    volumes: [3]\n"), "web", "volumes[0]", "mapping"),
    (svc("    image: a\n    environment: A=1\n"), "web", "environment", "mapping"),
    (svc("    image: a\n    environment: [A]\n"), "web", "environment[0]", "NAME=value"),
    (svc("    image: a\n    environment: ['A=1', 'A=2']\n"), "web", "environment[1]", "twice"),
    (svc("    image: a\n    environment: [' A=1']\n"), "web", "environment[0]", "spaces"),
    (svc("    image: a\n    environment: {A: }\n"), "web", "environment.A", "string"),
    (svc("    image: a\n    environment: {A: true}\n"), "web", "environment.A", "quote"),
    (svc("    image: a\n    environment: {'A B': x}\n"), "web", "environment.A B", "spaces"),
    (svc("    image: a\n    command: ''\n"), "web", "command", "empty"),
    (svc("    image: a\n    command: 'echo \"x'\n"), "web", "command", "split"),
    (svc("    image: a\n    command: [echo, 1]\n"), "web", "command", "list of strings"),
    (svc("    image: a\n    deploy: {update_config: 1}\n"), "web", "deploy.update_config",
     "mapping"),
    (svc("    image: a\n    deploy: {update_config: {speed: 2}}\n"), "web",
     "deploy.update_config.speed", "unknown key"),
    (svc("    image: a\n    deploy: {update_config: {parallelism: -1}}\n"), "web",
     "deploy.update_config.parallelism", "number"),
    (svc("    image: a\n    deploy: {update_config: {delay: 10 seconds}}\n"), "web",
     "deploy.update_config.delay", "duration"),
    (svc("    image: a\n    deploy: {update_config: {monitor: 5}}\n"), "web",
     "deploy.update_config.monitor", "duration"),
    (svc("    image: a\n    deploy: {update_config: {failure_action: explode}}\n"), "web",
     "deploy.update_config.failure_action", "rollback"),
    (svc("    image: a\n    deploy: {rollback_config: {failure_action: rollback}}\n"), "web",
     "deploy.rollback_config.failure_action", "continue, pause"),
    (svc("    image: a\n    deploy: {update_config: {max_failure_ratio: 2}}\n"), "web",
     "deploy.update_config.max_failure_ratio", "0 to 1"),
    (svc("    image: a\n    deploy: {update_config: {order: random}}\n"), "web",
     "deploy.update_config.order", "stop-first"),
]


@pytest.mark.parametrize(("text", "service", "key", "words"), ERRORS)
def test_errors_name_the_service_and_key(text: str, service: str, key: str,
                                         words: str) -> None:
    with pytest.raises(BaselineError) as err:
        parse_baseline(text, source="baseline.yml")
    exc = err.value
    assert (exc.service, exc.key) == (service, key)
    assert words in exc.problem
    message = str(exc)
    assert message.startswith("baseline.yml: ")
    if service:
        assert f"service {service!r}" in message
    if key:
        assert f"key {key!r}" in message
    assert exc.to_json() == {"service": service, "key": key, "problem": exc.problem}


def test_not_utf8_and_too_large() -> None:
    with pytest.raises(BaselineError, match="UTF-8"):
        parse_baseline(b"services:\n  \xff: {}\n")
    with pytest.raises(BaselineError, match="KiB"):
        parse_baseline("#" * 300_000)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"no baseline file at .*nope\.yml"):
        load_baseline(tmp_path / "nope.yml")


def test_yaml_merge_keys_are_not_duplicates() -> None:
    merged = parse_baseline("services:\n  web:\n    <<: {image: a, command: x}\n    image: b\n")
    assert (merged.services[0].image, merged.services[0].command) == ("b", ("x",))


@pytest.mark.parametrize(("text", "ns"), [
    ("10s", 10_000_000_000), ("1m30s", 90_000_000_000), ("500ms", 500_000_000),
    ("1.5s", 1_500_000_000), ("2h", 7_200_000_000_000), ("100us", 100_000), (0, 0),
])
def test_durations(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "1x", "-1s", 5, True, "1s2"])
def test_bad_durations(text: str | int) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
