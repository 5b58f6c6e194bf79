"""serving: a controller stops only when its daemon says it is no manager (_watch_role),
and the acting one does the cluster-wide work (cluster_jobs)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import controller.cluster as cluster_module
import controller.serving as serving
from controller.swarm import SwarmError

from ..helpers import FakeClock, build_controller


class Exhausted(BaseException):
    """More questions than answers: the watch went on past "not a manager" (a
    BaseException, which its `except Exception` does not swallow)."""


class Answers:
    """Swarm.local() answering each call with the next of `answers` (an error to raise)."""

    def __init__(self, *answers: SwarmError | None) -> None:
        self.answers = list(answers)

    def local(self) -> None:
        if not self.answers:
            raise Exhausted
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


class Counting:
    def __init__(self) -> None:
        self.heartbeats = 0
        self.stopped = threading.Event()

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def look(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped.set()


def test_a_daemon_that_does_not_answer_for_a_while_does_not_stop_the_controller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "ROLE_CHECK", 0.0)
    down = SwarmError("docker_unavailable", "the local Docker daemon does not answer", 503)
    pending = SwarmError("swarm_not_ready", "the swarm membership is 'pending' for now", 503)
    demoted = threading.Event()
    both = Counting()
    swarm = Answers(down, None, pending, SwarmError("not_a_manager", "not a manager", 503))
    serving._watch_role(swarm, both, both, demoted, [])  # type: ignore[arg-type]
    assert both.heartbeats == 3  # it went on through the daemon's silences
    assert demoted.is_set() and both.stopped.wait(5)  # and stopped when told "no manager"
    assert swarm.answers == []


def test_the_acting_controller_forgets_silent_controllers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's pruning is one of the cluster-wide jobs (a dead or demoted manager
    cannot remove its own entry)."""
    clock = FakeClock()
    monkeypatch.setattr(cluster_module, "time", clock)
    ctl = build_controller(tmp_path / "state")
    state = ctl.app.extensions["swarm_enroll"].state
    ctl.app.extensions["swarm_enroll"].registry.heartbeat(force=True)
    state.update_doc("controller/dead-1", lambda _old: {
        "hostname": "dead-1", "url": "https://10.0.0.9:8443", "at": clock.now - 10_000})
    jobs = {job.name: job for job in serving.cluster_jobs(ctl.config, ctl.swarm, ctl.app)}
    assert {"ca-reseal", "quorum-keeper", "controller-registry"} <= set(jobs)
    jobs["controller-registry"].tick()  # first sight: silent for FIRST_GUESS_MOST at most
    assert "controller/dead-1" in state.docs("controller")
    clock.advance(cluster_module.FORGET_AFTER - cluster_module.FIRST_GUESS_MOST + 1)
    jobs["controller-registry"].tick()
    assert sorted(state.docs("controller")) == ["controller/ctl-1"]
