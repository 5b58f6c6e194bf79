"""A failed lab test's report carries the tails of its Pis' controller and agent logs: the
lab is torn down after the test, and a flake seen once in CI is otherwise unreadable
(CI keeps only its output)."""

from __future__ import annotations

import pytest

from deploy.lab.lab import Lab

# lines of each kept in a failure report
LOG_TAIL = {"controller.log": 80, "agent.log": 25, "dockerd.log": 15}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Only the lab's tests, and only when they failed (setup, call or teardown)."""
    report: pytest.TestReport = yield
    if report.failed and item.get_closest_marker("lab"):
        labs = _labs_of(item)
        if not labs and report.when == "setup":  # the lab's fixture failed: the test lab's
            labs = [Lab()]
        for the_lab in labs:
            report.sections.append((f"lab logs ({the_lab.state_dir})", lab_log_tails(the_lab)))
    return report


def _labs_of(item: pytest.Item) -> list[Lab]:
    found: list[Lab] = []
    for value in getattr(item, "funcargs", {}).values():
        the_lab = value if isinstance(value, Lab) else getattr(value, "lab", None)
        if isinstance(the_lab, Lab) and the_lab.state_dir not in {f.state_dir for f in found}:
            found.append(the_lab)
    return found


def lab_log_tails(the_lab: Lab) -> str:
    parts = []
    names = [pi["name"] for pi in the_lab.state().get("pis", [])]  # not an earlier lab's
    dirs = [the_lab.pi_dir(n) for n in names] if names else sorted(
        p for p in the_lab.state_dir.glob("*") if p.is_dir())
    for pi_dir in dirs:
        for name, lines in LOG_TAIL.items():
            path = pi_dir / name
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:  # none (yet), or gone meanwhile: never the report's failure
                continue
            parts.append(f"==> {path} (last {len(tail)} lines) <==\n" + "\n".join(tail))
    return "\n".join(parts) or f"no logs under {the_lab.state_dir}"
