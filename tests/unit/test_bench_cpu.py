"""The storm's CPU-by-process figures (tests/bench/benchlab.py), on made-up /proc readings,
and the order and trees of an A/B storm."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.lab.lab import LabError
from tests.bench import report
from tests.bench.benchlab import ProcessSampler, _process_name, cpu_by_process, processes_cpu
from tests.bench.run import storm_pair, warmup_n
from tests.bench.storm import Followers, _with_client, run_load, variant_env

PLACES = (Path("/var/lib/swarm-enroll-bench"), Path("/run/sebench-"))


def test_a_lab_pis_process_is_named_with_its_pi() -> None:
    argv = [b"dockerd", b"--data-root", b"/var/lib/swarm-enroll-bench/storm2/docker"]
    assert _process_name("dockerd", argv, PLACES) == "dockerd (storm2)"
    assert _process_name("containerd", [b"containerd", b"--config",
                                        b"/run/sebench-/load/x/containerd.toml"],
                         PLACES) == "containerd (load)"
    assert _process_name("python3", [b"python3", b"/repo/tests/bench/storm_client.py",
                                     b"--n", b"5"], PLACES) == "storm_client"
    assert _process_name("python", [b"python", b"-m", b"tests.bench"], PLACES) == "tests.bench"
    assert _process_name("kdamond.0", [], PLACES) == "kdamond.0"


def test_cpu_is_counted_per_name_between_readings_and_a_reused_pid_from_zero() -> None:
    before = {1: ("dockerd (storm)", 10.0, 100), 2: ("dockerd (storm2)", 5.0, 100),
              3: ("old", 7.0, 100), 9: ("gone", 1.0, 100)}
    after = {1: ("dockerd (storm)", 12.0, 100), 2: ("dockerd (storm2)", 6.0, 100),
             3: ("new", 0.5, 900),  # pid 3 ended and a new process got its number
             4: ("storm_client", 3.0, 950)}  # began meanwhile: counted whole
    cores = cpu_by_process(before, [after], 2.0, named={1: "controller, serving"})
    assert cores == {"storm_client": 1.5, "controller, serving": 1.0,
                     "dockerd (storm2)": 0.5, "new": 0.25}
    assert list(cores) == ["storm_client", "controller, serving", "dockerd (storm2)", "new"]


def test_a_process_is_named_again_after_it_execs_another_program() -> None:
    """The sampler's names are kept per process, and the load generator's process first
    runs nsenter and taskset: what it runs next must not keep their name."""
    proc = subprocess.Popen(["sh", "-c", "read line; exec sleep 30"], stdin=subprocess.PIPE)
    try:
        names: dict[tuple[int, int, str], str] = {}
        assert processes_cpu(PLACES, names)[proc.pid][0] == "sh"
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while processes_cpu(PLACES, names)[proc.pid][0] != "sleep":
            assert time.monotonic() < deadline, "still named sh after its exec"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_ended_before_the_last_reading_counts_until_its_last() -> None:
    before = {1: ("controller", 10.0, 100), 4: ("storm_client", 1.0, 950)}
    middle = {1: ("controller", 11.0, 100), 4: ("storm_client", 3.0, 950),
              5: ("short", 0.4, 960)}  # began and ended within the window
    last = {1: ("controller", 12.0, 100),  # the load generator has exited: not in it
            5: ("reused", 0.2, 990)}  # pid 5 ended and a new process got its number
    cores = cpu_by_process(before, [middle, last], 2.0)
    assert cores == {"storm_client": 1.0, "controller": 1.0, "short": 0.2, "reused": 0.1}
    assert cpu_by_process(before, [last], 2.0) == {"controller": 1.0, "reused": 0.1}


def test_the_samplers_window_counts_a_process_that_exited_within_it() -> None:
    sampler = ProcessSampler(1, PLACES)
    sampler.samples = [  # (time, reading): the controller (pid 1) busy from 1 s to 3 s
        (0.0, {1: ("controller", 5.0, 100)}),
        (1.0, {1: ("controller", 5.0, 100), 4: ("storm_client", 0.5, 950)}),
        (2.0, {1: ("controller", 6.0, 100), 4: ("storm_client", 1.5, 950)}),
        (3.0, {1: ("controller", 7.0, 100)}),  # the load generator has exited
        (4.0, {1: ("controller", 7.0, 100)})]
    assert sampler.cores({1: "controller, serving"}) == {
        "window_s": 2.0, "cores": {"controller, serving": 1.0, "storm_client": 0.5}}


def test_the_load_generator_is_counted_by_its_own_figure_from_t0() -> None:
    cpu = {"window_s": 2.0, "cores": {"controller": 0.9, "storm_client": 0.6}}
    assert _with_client(cpu, 0.4) == {"window_s": 2.0,
                                      "cores": {"controller": 0.9, "storm_client": 0.2}}
    assert list(_with_client(cpu, 4.0)["cores"]) == ["storm_client", "controller"]


def test_the_warm_up_storm_is_reported_apart() -> None:
    machine = {"arch": "x86_64", "nproc": 2, "cpu_model": "cpu", "mem_total_mb": 2048,
               "kernel": "6", "python": "3.11", "dockerd": "Docker"}
    res = {"date": "now", "machine": machine, "params": {"mode": "full"}, "storm_warmup": {
        "n": 1000, "makespan_s": 12.5, "latency_p99_s": 3.9, "controller_cpu_ms_per_grant": 5.2}}
    text = report.markdown(res)
    assert "| storm warm-up N=1,000, not counted (the lab's first storm) | all granted after " \
           "| 12.50 s |" in text
    assert "controller CPU per grant | 5.2 ms |" in text


def test_the_warm_up_is_as_large_as_the_largest_storm_up_to_1000() -> None:
    assert (warmup_n([5, 12]), warmup_n([100, 1000, 5000]), warmup_n([1000, 300])) == \
        (12, 1000, 1000)


def test_the_tree_and_the_patched_copy_take_turns_going_first() -> None:
    runs: list[object] = []
    cruns: list[object] = []
    src = Path("/tmp/patched")
    orders = [[s for s, _ in storm_pair(rep, runs, cruns, src)] for rep in (1, 2, 3, 4)]
    assert orders == [[None, src], [src, None], [None, src], [src, None]]
    assert [into for _, into in storm_pair(2, runs, cruns, src)] == [cruns, runs]
    assert storm_pair(2, runs, cruns, None) == [(None, runs)]  # no copy: the tree alone


class _Exited:
    def poll(self) -> int:
        return 1  # gone at once: start() stops before it asks the controller anything


class _FollowerLab:
    """Just what Followers.start() asks of the lab, its processes recorded, not started."""

    def __init__(self) -> None:
        self.controller_cmd = ["/venv/bin/enroll-controller"]
        self.started: list[tuple[list[str], dict[str, str]]] = []

    def pi_dir(self, name: str) -> Path:
        return Path("/run/sebench") / name

    def docker_host(self, name: str) -> str:
        return f"unix:///run/sebench/{name}/docker.sock"

    def node(self, name: str) -> dict[str, str]:
        return {"ip": "198.18.1.12"}

    def popen(self, name: str, argv: list[str], *, log: Path, env: dict[str, str]) -> _Exited:
        self.started.append((argv, env))
        return _Exited()


def test_an_ab_storms_following_controllers_run_the_tree_under_test(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Followers, "_join", lambda self: None)
    for src, env in ((None, {}), (Path("/tmp/patched"), variant_env(Path("/tmp/patched")))):
        lab = _FollowerLab()
        with pytest.raises(LabError, match="did not serve"):
            Followers(lab, "t", "/ca.pem", src).start()  # type: ignore[arg-type]
        argv, used = lab.started[0]
        assert used == env
        assert ("-m" in argv and "controller.cli" in argv) == (src is not None)


def test_the_load_generator_gets_the_bootstrap_token_by_its_environment() -> None:
    """A command line is there for every user of the host to read (ps)."""
    ran: list[tuple[list[str], dict[str, str]]] = []

    class Lab(_FollowerLab):
        def exec(self, name: str, argv: list[str], *, env: dict[str, str], **kw: object,
                 ) -> subprocess.CompletedProcess:
            ran.append((argv, env))
            return subprocess.CompletedProcess(argv, 0, stdout='{"granted": 0}\n', stderr="")

    ctl = SimpleNamespace(url="https://198.18.1.12:8443", info={"pin": "sha256:" + "ab" * 32})
    assert run_load(Lab(), ctl, 5, "seb_secret", 4, 30.0) == {"granted": 0}  # type: ignore[arg-type]
    argv, env = ran[0]
    assert not any("seb_secret" in a for a in argv) and env["STORM_TOKEN"] == "seb_secret"
