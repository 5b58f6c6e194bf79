"""The storm's CPU-by-process figures (tests/bench/benchlab.py), on made-up /proc readings,
and the order of an A/B storm."""

from __future__ import annotations

from pathlib import Path

from tests.bench.benchlab import _process_name, cpu_by_process
from tests.bench.run import storm_pair

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
    cores = cpu_by_process(before, after, 2.0, named={1: "controller, serving"})
    assert cores == {"storm_client": 1.5, "controller, serving": 1.0,
                     "dockerd (storm2)": 0.5, "new": 0.25}
    assert list(cores) == ["storm_client", "controller, serving", "dockerd (storm2)", "new"]


def test_the_tree_and_the_patched_copy_take_turns_going_first() -> None:
    runs: list[object] = []
    cruns: list[object] = []
    src = Path("/tmp/patched")
    orders = [[s for s, _ in storm_pair(rep, runs, cruns, src)] for rep in (1, 2, 3, 4)]
    assert orders == [[None, src], [src, None], [None, src], [src, None]]
    assert [into for _, into in storm_pair(2, runs, cruns, src)] == [cruns, runs]
    assert storm_pair(2, runs, cruns, None) == [(None, runs)]  # no copy: the tree alone
