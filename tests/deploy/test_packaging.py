"""`make dist`: a wheel and an sdist; the wheel installs in a fresh venv and runs.

Slow (it builds in an isolated environment and installs the dependencies into a new
venv from the package index): about a minute.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import __version__
from controller.enrollctl import main as enrollctl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DATA = ["deploy/systemd/enroll-agent.service", "deploy/systemd/enroll-controller.service",
                "deploy/systemd/swarm-enroll-firstboot.service",
                "deploy/systemd/restart-backoff.conf", "deploy/systemd/enroll-agent-check.service",
                "deploy/systemd/enroll-agent-check.timer",
                "deploy/systemd/enroll-controller-ensure.service",
                "deploy/systemd/enroll-controller-ensure.timer", "deploy/firstboot/firstboot.sh",
                "deploy/firstboot/README.txt"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(["make", "-C", str(ROOT), "dist", f"DIST={out}"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_make_dist_builds_a_wheel_and_an_sdist(dist: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert wheels == [f"swarm_enroll-{__version__}-py3-none-any.whl"]
    assert sdists == [f"swarm_enroll-{__version__}.tar.gz"]
    with zipfile.ZipFile(dist / wheels[0]) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"swarm_enroll-{__version__}.dist-info/entry_points.txt").decode()
    assert set(PACKAGE_DATA) <= names
    assert {"agent/cli.py", "controller/cli.py", "controller/flash/cli.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    for script in ("enroll-agent = agent.cli:main", "enroll-controller = controller.cli:main",
                   "enrollctl = controller.enrollctl:main"):
        assert script in entry_points
    with tarfile.open(dist / sdists[0]) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    assert set(PACKAGE_DATA) | {"pyproject.toml", "README.md"} <= members


def _run(*argv: str | Path) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout.strip()


def test_wheel_installs_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    bin_ = venv / "bin"
    # what a worker Pi gets: the wheel alone, no controller extra
    _run(bin_ / "pip", "install", "--no-input", "--quiet", wheel)
    assert _run(bin_ / "enroll-agent", "--version") == f"enroll-agent, version {__version__}"
    assert _run(bin_ / "enrollctl", "--version") == f"enrollctl, version {__version__}"
    assert _run(bin_ / "enroll-controller", "--version") == \
        f"enroll-controller, version {__version__}"
    code = ("import sys, importlib.util, agent.cli, agent.enroll, agent.config, agent.wire.jws; "
            "assert importlib.util.find_spec('flask') is None, 'flask installed'; "
            "assert 'flask' not in sys.modules; "
            "from importlib import resources; "
            "print(resources.files('deploy').joinpath('systemd/enroll-agent.service')"
            ".read_text().count('ExecStart='))")
    assert _run(bin_ / "python", "-c", code) == "1"
    # what the controller's Pi gets: the app imports with its extra installed
    _run(bin_ / "pip", "install", "--no-input", "--quiet", f"{wheel}[controller]")
    _run(bin_ / "python", "-c", "import controller.app, controller.baseline.reconcile")


def test_flash_builds_the_wheel_from_this_tree(tmp_path: Path) -> None:
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=tty1 root=PARTUUID=1234-02 rootwait\n")
    (boot / "config.txt").write_text("[all]\n")
    result = CliRunner().invoke(enrollctl, ["--config", "/dev/null", "flash", str(boot),
                                            "--hostname", "PiLike-31",
                                            "--pin", "sha256:" + "cd" * 32])
    assert result.exit_code == 0, result.output + result.stderr
    wheels = list((boot / "swarm-enroll" / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"swarm_enroll-{__version__}-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as zf:
        assert zf.read("controller/flash/plan.py") == \
            (ROOT / "controller/flash/plan.py").read_bytes()
