"""A stand-in image for the lab, made from Debian's busybox-static.

The lab has no registry and no route out, so the images the baseline services name
(nginx, the visualizer, ...) are replaced by one tiny image: busybox with its applets, a
web page, and an init that serves it with `httpd` on ports 80 and 8080 and stops at once on
SIGTERM. It is imported once per daemon and tagged with every name the caller asks for.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker

BUSYBOX = Path("/usr/bin/busybox")
DEFAULT_IMAGES = ("nginx:latest", "dockersamples/visualizer:latest", "busybox:latest")
STANDIN_LABEL = "swarm-enroll.lab.standin"

INDEX_HTML = b"<html><body><h1>swarm-enroll lab stand-in</h1></body></html>\n"
INIT_SH = b"""#!/bin/sh
# swarm-enroll lab stand-in: serve /www on 80 and 8080; exit at once on SIGTERM
trap 'exit 0' TERM INT
httpd -p 8080 -h /www
httpd -f -p 80 -h /www &
wait
"""
CHANGES = (
    'CMD ["/init.sh"]',
    "EXPOSE 80 8080",
    f'LABEL {STANDIN_LABEL}="1"',
    "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
)


class ImageError(RuntimeError):
    """Building or importing the stand-in failed."""


def applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applet names this busybox binary provides."""
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({a for a in out.stdout.split() if a and "/" not in a and a != "busybox"})


def rootfs_tar(busybox: Path = BUSYBOX) -> bytes:
    """An uncompressed tar of the stand-in's root filesystem, built in memory."""
    if not busybox.is_file():
        raise ImageError(f"{busybox} not found (apt-get install busybox-static)")
    buf = io.BytesIO()
    mtime = int(time.time())

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, mtime
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "www", "root",
                  "proc", "sys", "dev", "var", "run"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in applets(busybox):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("init.sh", tarfile.REGTYPE, 0o755, INIT_SH)
        add("www/index.html", tarfile.REGTYPE, 0o644, INDEX_HTML)
        add("etc/passwd", tarfile.REGTYPE, 0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def _split(ref: str) -> tuple[str, str]:
    """'repo[:tag]' -> (repo, tag); a ':' inside a registry host:port is not a tag."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def import_standin(client: docker.DockerClient, tags: Sequence[str], data: bytes) -> str:
    """Import the rootfs once as the first tag, tag it with the rest; return the image id."""
    if not tags:
        raise ImageError("no image names to tag the stand-in with")
    repo, tag = _split(tags[0])
    client.api.import_image_from_data(data, repository=repo, tag=tag, changes=list(CHANGES))
    image = client.images.get(tags[0])
    for ref in tags[1:]:
        repo, tag = _split(ref)
        image.tag(repo, tag)
    return image.id


def import_everywhere(
    clients: dict[str, docker.DockerClient], tags: Sequence[str], busybox: Path = BUSYBOX
) -> dict[str, str]:
    """Import into every daemon in parallel; return {name: image id}."""
    data = rootfs_tar(busybox)
    # a pinned digest cannot be recreated locally: tag the name part only
    tags = list(dict.fromkeys(t.split("@", 1)[0] for t in tags))  # unique, order kept
    with ThreadPoolExecutor(max_workers=max(1, len(clients))) as pool:
        futures = {n: pool.submit(import_standin, c, tags, data) for n, c in clients.items()}
    ids, errors = {}, []
    for name, fut in futures.items():
        try:
            ids[name] = fut.result()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise ImageError("importing the stand-in image failed: " + "; ".join(errors))
    return ids


def baseline_images(path: Path) -> list[str]:
    """Image names in a baseline services file (compose-like YAML); [] if unreadable.

    `image` may be a string or a mapping of architecture to image name.
    """
    try:
        import yaml  # controller extra; optional for the lab

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        return []
    found: list[str] = []
    services: Any = doc.get("services", {}) if isinstance(doc, dict) else {}
    for svc in services.values() if isinstance(services, dict) else []:
        image = svc.get("image") if isinstance(svc, dict) else None
        candidates: Iterable[Any] = image.values() if isinstance(image, dict) else [image]
        found += [c for c in candidates if isinstance(c, str) and c]
    return found
