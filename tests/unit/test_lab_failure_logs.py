"""A failed lab test's report carries its Pis' log tails (tests/labfailures.py): the lab is
torn down after the test, and a flake seen once in CI must be readable from CI's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.lab.lab import Lab
from tests.labfailures import lab_log_tails

pytest_plugins = ["pytester"]


def _lab_with_logs(root: Path) -> Lab:
    the_lab = Lab(state_dir=root / "state" / "lab")
    for name in ("PiLike-01", "Earlier-09"):
        the_lab.pi_dir(name).mkdir(parents=True)
        (the_lab.pi_dir(name) / "controller.log").write_text(
            "".join(f"{name} controller line {i}\n" for i in range(200)))
        (the_lab.pi_dir(name) / "agent.log").write_text(f"{name}: joined\n")
    the_lab.state_file.write_text(json.dumps({"pis": [{"name": "PiLike-01"}]}))
    return the_lab


def test_tails_are_of_this_labs_pis_and_bounded(tmp_path: Path) -> None:
    text = lab_log_tails(_lab_with_logs(tmp_path))
    assert "PiLike-01 controller line 199" in text and "PiLike-01: joined" in text
    assert "PiLike-01 controller line 119" not in text  # the last 80 lines only
    assert "Earlier-09" not in text  # a Pi of an earlier lab in the same state dir


def test_a_log_that_cannot_be_read_is_passed_over(tmp_path: Path) -> None:
    the_lab = _lab_with_logs(tmp_path)
    (the_lab.pi_dir("PiLike-01") / "agent.log").unlink()
    (the_lab.pi_dir("PiLike-01") / "agent.log").mkdir()  # IsADirectoryError on reading
    text = lab_log_tails(the_lab)
    assert "PiLike-01 controller line 199" in text and "agent.log" not in text


def test_a_failed_lab_tests_report_shows_the_tails(pytester: pytest.Pytester,
                                                    tmp_path: Path) -> None:
    root = tmp_path / "labroot"
    _lab_with_logs(root)
    pytester.makeconftest("def pytest_configure(config):\n"
                          "    config.addinivalue_line('markers', 'lab: a lab test')\n")
    pytester.makepyfile(f"""
        import pytest
        from deploy.lab.lab import Lab

        @pytest.fixture
        def lab():
            return Lab(state_dir={str(root / "state" / "lab")!r})

        @pytest.fixture
        def same_lab():
            return Lab(state_dir={str(root / "state" / "lab")!r})

        @pytest.mark.lab
        def test_fails(lab, same_lab):
            assert False

        @pytest.mark.lab
        def test_passes(lab):
            pass

        def test_fails_without_a_lab():
            assert False
    """)
    result = pytester.runpytest_inprocess("-p", "tests.labfailures", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2, passed=1)
    out = result.stdout.str()
    assert "lab logs" in out
    # the failed lab test's only, and its lab once though two fixtures hold it
    assert out.count("PiLike-01 controller line 199") == 1


def test_a_lab_fixture_that_fails_reports_the_test_labs_logs(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo not converging fails the fixture before any test holds the lab."""
    root = tmp_path / "labroot"
    _lab_with_logs(root)
    monkeypatch.setenv("ENROLL_LAB_DIR", str(root / "state" / "lab"))
    pytester.makeconftest("def pytest_configure(config):\n"
                          "    config.addinivalue_line('markers', 'lab: a lab test')\n")
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def cluster():
            raise RuntimeError("the demo did not converge")

        @pytest.mark.lab
        def test_needs_the_cluster(cluster):
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "tests.labfailures", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert "PiLike-01 controller line 199" in result.stdout.str()
