"""The OS's own mDNS responder, avahi-daemon, where one runs.

Two responders on one host fight over port 5353 and answer each other's probes, which
avahi itself warns against; so where avahi runs, it announces and browses for us:
announcing is a static service file in its services dir (avahi reloads that dir by
itself, and keeps announcing after we exit), browsing is `avahi-browse -rtpk`, run again
every few seconds (a resolved TXT is printed once per run, so re-running is how changes
are seen). Nothing here imports zeroconf.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from agent.avahibrowse import MAX_OUTPUT, Resolved, parse_browse

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/avahi-daemon")
SERVICES_DIR = Path("/etc/avahi/services")
BROWSE_TIMEOUT = 10.0  # seconds for one avahi-browse run

Found = Callable[[str, dict[str, str], list[str], int], None]
Gone = Callable[[str], None]


def running(run_dir: Path = RUN_DIR) -> bool:
    """True when an avahi-daemon answers on its socket here (as nss-mdns checks it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(str(run_dir / "socket"))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def short_type(service: str) -> str:
    """`_swarm-node._tcp.local.` -> `_swarm-node._tcp`, as avahi names types."""
    return service.removesuffix(".").removesuffix(".local")


def service_file_name(service: str) -> str:
    """One file per service type: `_swarm-node._tcp.local.` -> `swarm-node.service`."""
    return short_type(service).split(".")[0].lstrip("_") + ".service"


def _xml_text(value: str) -> str:
    # XML 1.0 has no control characters; TXT values are printable ASCII anyway
    return escape("".join(c for c in value if c.isprintable()))


def service_xml(instance: str, service: str, port: int, txt: dict[str, str]) -> str:
    """An avahi static service file (avahi.service(5)) announcing one instance."""
    records = "".join(f"    <txt-record>{_xml_text(f'{k}={v}')}</txt-record>\n"
                      for k, v in txt.items())
    return ("<?xml version=\"1.0\" standalone='no'?>\n"
            "<!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n"
            "<!-- written by swarm-enroll; rewritten when its state changes -->\n"
            "<service-group>\n"
            f"  <name replace-wildcards={quoteattr('no')}>{_xml_text(instance)}</name>\n"
            "  <service>\n"
            f"    <type>{_xml_text(short_type(service))}</type>\n"
            f"    <port>{int(port)}</port>\n"
            f"{records}"
            "  </service>\n"
            "</service-group>\n")


def write_atomically(path: Path, text: str) -> bool:
    """Write `text` to `path` (0644) by rename, so avahi never reads half a file; False if
    it was there already."""
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = path.with_name(f".{path.name}.tmp")  # avahi reads only *.service
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


class AvahiMDNS:
    """The MDNS interface (announce, browse, close) through avahi-daemon.

    `keep_on_close`: the agent's file stays when it exits, so that avahi goes on
    announcing the Pi (a joined agent may exit); a controller's is removed, since agents
    must not be sent to a controller that stopped.
    """

    def __init__(self, services_dir: Path = SERVICES_DIR, keep_on_close: bool = True,
                 refresh: float = 5.0) -> None:
        self.services_dir = services_dir
        self.keep_on_close = keep_on_close
        self.refresh = refresh
        self._written: list[Path] = []
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def announce(self, service: str, instance: str, port: int, txt: dict[str, str],
                 addresses: list[str], server: str) -> None:
        """Write (or rewrite) this service's file. avahi announces its own host name and
        addresses (on the interfaces it is allowed), so `addresses` and `server` are not
        needed. Never raises: mDNS is how the admin sees a Pi, not how it enrolls."""
        path = self.services_dir / service_file_name(service)
        try:
            if write_atomically(path, service_xml(instance, service, port, txt)):
                log.info("avahi announces %s as %r (%s)", short_type(service), instance, path)
        except OSError as exc:
            log.warning("cannot write the avahi service file %s: %s", path, exc.strerror)
            return
        if path not in self._written:
            self._written.append(path)

    def browse(self, service: str, found: Found, gone: Gone | None = None) -> None:
        """Call `found(instance, txt, addresses, port)` for each instance seen or changed,
        `gone(instance)` when one is no longer there; in a thread of its own."""
        thread = threading.Thread(target=self._browse_loop, args=(service, found, gone),
                                  name="avahi-browse", daemon=True)
        self._threads.append(thread)
        thread.start()

    def browse_once(self, service: str, found: Found) -> None:
        """One `avahi-browse` run, `found` called for what it saw (a check-in's search)."""
        output = self._run_browse(short_type(service))
        if output is not None:
            self._report(parse_browse(output, short_type(service)), {}, found, None)

    def _browse_loop(self, service: str, found: Found, gone: Gone | None) -> None:
        known: dict[str, Resolved] = {}
        while not self._closing.is_set():
            output = self._run_browse(short_type(service))
            if output is not None:
                self._report(parse_browse(output, short_type(service)), known, found, gone)
            self._closing.wait(self.refresh)

    @staticmethod
    def _report(seen: dict[str, Resolved | None], known: dict[str, Resolved],
                found: Found, gone: Gone | None) -> None:
        for name in [n for n in known if n not in seen]:
            del known[name]
            if gone:
                gone(name)
        for name, resolved in seen.items():
            if resolved is None or known.get(name) == resolved:
                continue  # not resolved this time: keep what we knew
            known[name] = resolved
            try:
                found(name, dict(resolved.txt), list(resolved.addresses), resolved.port)
            except Exception:  # one bad peer must never stop the browser thread
                log.exception("ignoring mDNS record %r", name)

    def _run_browse(self, service_type: str) -> bytes | None:
        """One `avahi-browse -rtpk` run's output (bounded in size and time); None if it
        could not run."""
        try:
            proc = subprocess.Popen(
                ["avahi-browse", "-rtpk", service_type], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={**os.environ, "LC_ALL": "C"})
        except OSError as exc:
            log.warning("cannot run avahi-browse: %s", exc.strerror)
            return None
        with self._lock:
            self._procs.add(proc)
        timer = threading.Timer(BROWSE_TIMEOUT, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            output = proc.stdout.read(MAX_OUTPUT + 1)
            if len(output) > MAX_OUTPUT:
                proc.kill()
                log.warning("avahi-browse %s: more than %d bytes; ignoring this run",
                            service_type, MAX_OUTPUT)
            proc.wait()
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
            with self._lock:
                self._procs.discard(proc)
        # failed, timed out or too long: keep what we knew rather than report it all gone
        return output if proc.returncode == 0 else None

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            for proc in self._procs:
                proc.kill()
        for thread in self._threads:
            thread.join(timeout=BROWSE_TIMEOUT)
        if not self.keep_on_close:
            for path in self._written:
                path.unlink(missing_ok=True)
        self._written.clear()
