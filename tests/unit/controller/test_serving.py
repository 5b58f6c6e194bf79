"""serving._watch_role: a controller stops only when its daemon says it is no manager."""

from __future__ import annotations

import threading

import pytest

import controller.serving as serving
from controller.swarm import SwarmError


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
