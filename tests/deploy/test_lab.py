"""The simulated cluster itself: namespaces, one dockerd per Pi, Swarm across them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import requests

from deploy.lab import netns, procs
from deploy.lab.demo import wait_for
from deploy.lab.lab import Lab

pytestmark = pytest.mark.lab

PI_NAMES = ("PiLike-01", "PiLike-02", "PiLike-03")  # the session lab (conftest.PI_NAMES)
IPS = {name: f"198.18.0.{11 + i}" for i, name in enumerate(PI_NAMES)}
BUSYBOX = "/usr/bin/busybox"




def test_session_lab_is_the_expected_one(pi_names: tuple[str, ...]) -> None:
    assert pi_names == PI_NAMES


def test_each_daemon_has_its_own_hostname(lab: Lab) -> None:
    for name in PI_NAMES:
        assert lab.docker(name).info()["Name"] == name


def test_exec_sees_the_pis_hostname_ip_and_docker_host(lab: Lab) -> None:
    out = lab.exec("PiLike-02", ["sh", "-c", "hostname; echo $DOCKER_HOST; ip -4 -o addr"],
                   capture_output=True, check=True).stdout.splitlines()
    assert out[0] == "PiLike-02"
    assert out[1] == lab.docker_host("PiLike-02")
    assert "198.18.0.12/24" in " ".join(out[2:])


def test_pis_have_no_route_out(lab: Lab) -> None:
    for name in PI_NAMES:
        routes = netns.routes(lab.netns_name(name))
        assert not [r for r in routes if r.startswith("default")], routes
        # the kernel refuses at once: nothing is sent anywhere
        res = lab.exec(name, ["ip", "route", "get", "192.0.2.1"], capture_output=True)
        assert res.returncode != 0 and "unreachable" in res.stderr.lower()


def test_standin_image_runs(lab: Lab) -> None:
    client = lab.docker("PiLike-03")
    tags = {t for img in client.images.list() for t in img.tags}
    assert {"nginx:latest", "dockersamples/visualizer:latest", "busybox:latest"} <= tags
    out = client.containers.run("busybox:latest", ["echo", "hello from the lab"], remove=True)
    assert out == b"hello from the lab\n"


def test_swarm_across_three_pis(lab: Lab) -> None:
    mgr = lab.docker("PiLike-01")
    mgr.swarm.init(advertise_addr=IPS["PiLike-01"], listen_addr=f"{IPS['PiLike-01']}:2377")
    token = mgr.swarm.attrs["JoinTokens"]["Worker"]
    for name in PI_NAMES[1:]:
        assert lab.docker(name).swarm.join(
            remote_addrs=[f"{IPS['PiLike-01']}:2377"], join_token=token,
            advertise_addr=IPS[name], listen_addr=f"{IPS[name]}:2377")

    def all_ready():
        nodes = mgr.nodes.list()
        states = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"] for n in nodes}
        return states if len(states) == 3 and set(states.values()) == {"ready"} else None

    states = wait_for("3 Ready nodes", all_ready, 30, interval=0.2)
    assert set(states) == set(PI_NAMES)

    # a global service from the stand-in image, published in host mode (no IPVS here)
    mgr.services.create(
        "nginx:latest", name="web", mode=docker.types.ServiceMode("global"),
        endpoint_spec=docker.types.EndpointSpec(ports={80: (80, "tcp", "host")}))

    def served_everywhere():
        for name in PI_NAMES:  # fetched from a neighbour Pi, across the lab bridge
            # (no `wget -T`: Debian's busybox-static 1.35 wget segfaults with it)
            res = lab.exec("PiLike-02", [BUSYBOX, "wget", "-q", "-O-", f"http://{IPS[name]}/"],
                           capture_output=True, timeout=10)
            if "stand-in" not in res.stdout:
                return False
        return True

    wait_for("the web service on every Pi", served_everywhere, 60, interval=0.2)


def test_host_reaches_a_pi_only_through_the_admin_veth(lab: Lab, tmp_path: Path) -> None:
    route = subprocess.run(["ip", "route", "get", IPS["PiLike-03"]], capture_output=True,
                           text=True, check=True).stdout
    assert f"dev {lab.host_if}" in route and "src 198.18.0.254" in route
    (tmp_path / "hello.txt").write_text("hello from PiLike-03\n")
    server = lab.popen("PiLike-03", [sys.executable, "-m", "http.server", "--bind",
                                     IPS["PiLike-03"], "--directory", str(tmp_path), "8000"])
    try:
        session = requests.Session()
        session.trust_env = False  # no proxy: straight to the lab address

        def fetch():
            try:
                return session.get(f"http://{IPS['PiLike-03']}:8000/hello.txt", timeout=2)
            except requests.RequestException:
                return None

        resp = wait_for("the http server inside PiLike-03", fetch, 30, interval=0.2)
        assert resp.status_code == 200 and resp.text == "hello from PiLike-03\n"
        # and the server really lives in the Pi's namespace, not on the host
        assert procs.netns_of(server.pid) == netns.netns_id(lab.netns_name("PiLike-03"))
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_status_and_cli(lab: Lab) -> None:
    st = lab.status()
    assert [n["name"] for n in st["nodes"]] == list(PI_NAMES)
    for n in st["nodes"]:
        assert n["running"] and n["pid"] and n["ip"] == IPS[n["name"]]
        assert n["netns"] == f"selab-{n['name']}" and n["docker_host"].startswith("unix:///run/")
    cli = [str(Path(sys.executable).parent / "enroll-lab"), "--state-dir", str(lab.state_dir)]
    out = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert {"controller_url", "pin", "admin_token", "nodes"} <= set(data)
    assert [n["name"] for n in data["nodes"]] == list(PI_NAMES)
    out = subprocess.run([*cli, "exec", "PiLike-01", "--", "hostname"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "PiLike-01"
    out = subprocess.run([*cli, "exec", "PiLike-01", "--", "sh", "-c", "exit 7"])
    assert out.returncode == 7
    out = subprocess.run([*cli, "exec", "NoSuchPi", "--", "true"], capture_output=True,
                         text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "NoSuchPi" in out.stderr
    out = subprocess.run([*cli, "logs", "PiLike-01", "--docker", "-n", "3"],
                         capture_output=True, text=True, check=True)
    assert len(out.stdout.splitlines()) == 3
