"""The stand-in image's root filesystem and the image names the lab tags it with."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deploy.lab import images


def test_rootfs_has_busybox_applets_and_a_page() -> None:
    with tarfile.open(fileobj=io.BytesIO(images.rootfs_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["bin/busybox"].isfile() and members["bin/busybox"].mode & 0o111
        for applet in ("sh", "httpd", "wget", "sleep", "cat", "echo", "ls"):
            link = members[f"bin/{applet}"]
            assert link.issym() and link.linkname == "busybox"
        assert b"stand-in" in tar.extractfile("www/index.html").read()
        init = tar.extractfile("init.sh").read()
        assert b"trap" in init and b"-p 80" in init and b"-p 8080" in init
        assert members["tmp"].mode == 0o1777


def test_baseline_images(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "baseline.yml"
    path.write_text(
        "services:\n"
        "  nginx:\n    image: nginx:1.25\n"
        "  viz:\n    image:\n      armv7l: alexellis2/visualizer-arm:latest\n"
        "      aarch64: dockersamples/visualizer:latest\n"
        "  broken: 3\n"
    )
    assert images.baseline_images(path) == [
        "nginx:1.25", "alexellis2/visualizer-arm:latest", "dockersamples/visualizer:latest"]
    assert images.baseline_images(tmp_path / "missing.yml") == []


@pytest.mark.parametrize(("ref", "split"), [
    ("nginx", ("nginx", "latest")),
    ("nginx:1.25", ("nginx", "1.25")),
    ("dockersamples/visualizer:latest", ("dockersamples/visualizer", "latest")),
    ("registry.local:5000/app", ("registry.local:5000/app", "latest")),
    ("registry.local:5000/app:v2", ("registry.local:5000/app", "v2")),
])
def test_split_reference(ref: str, split: tuple[str, str]) -> None:
    assert images._split(ref) == split
