"""Network plumbing for the lab: named namespaces, the LAN bridge and the veths.

Everything lives in namespaces the lab creates; the only thing in the root namespace is
the admin veth (so host-side tools reach the Pis' addresses), and it carries a subnet
inside 198.18.0.0/15 that no real network routes. Pis get no default route.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")
BRIDGE = "br0"
IP = "ip"


class NetError(RuntimeError):
    """An `ip` command failed; the message carries its stderr."""


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ip [-n netns] args...`; raise NetError with stderr on failure when `check`."""
    argv = [IP, *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def netns_path(name: str) -> Path:
    """The bind-mounted nsfs file that `ip netns add` creates (what nsenter --net= takes)."""
    return NETNS_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def list_netns(prefix: str) -> list[str]:
    """Names of the named namespaces starting with `prefix`."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def netns_id(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of a named namespace, comparable with /proc/<pid>/ns/net."""
    try:
        st = os.stat(netns_path(name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def add_netns(name: str) -> None:
    """Create a named namespace with loopback up."""
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete a named namespace; already gone is fine."""
    if netns_exists(name) or name in _ip_netns_list():
        ip("netns", "delete", name, check=False)
    path = netns_path(name)
    if path.exists():  # a stale file whose mount is gone
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        path.unlink(missing_ok=True)


def _ip_netns_list() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def create_lan(lan_ns: str) -> None:
    """The LAN namespace with a plain bridge (no STP delay, no multicast snooping: mDNS)."""
    add_netns(lan_ns)
    ip("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0",
       "mcast_snooping", "0", netns=lan_ns)
    ip("link", "set", BRIDGE, "up", netns=lan_ns)


def add_pi_link(lan_ns: str, pi_ns: str, index: int, cidr: str) -> str:
    """veth `selv<index>` on the bridge, its peer as `eth0` in the Pi's namespace; no route out.

    Returns the bridge-side interface name.
    """
    lan_if = f"selv{index}"
    ip("link", "add", lan_if, "type", "veth", "peer", "name", "eth0", "netns", pi_ns, netns=lan_ns)
    ip("link", "set", lan_if, "master", BRIDGE, "up", netns=lan_ns)
    ip("addr", "add", cidr, "dev", "eth0", netns=pi_ns)
    ip("link", "set", "eth0", "up", netns=pi_ns)
    return lan_if


def add_host_link(lan_ns: str, host_if: str, cidr: str) -> None:
    """The admin veth: `host_if` in the root namespace with `cidr`, its peer on the bridge.

    Only the connected route of the lab subnet appears in the root namespace; IPv6 is off
    on it so the host sends nothing unasked (router solicitations) into the lab.
    """
    lan_if = "selvh"
    ip("link", "add", host_if, "type", "veth", "peer", "name", lan_if, "netns", lan_ns)
    ip("link", "set", lan_if, "master", BRIDGE, "up", netns=lan_ns)
    _sysctl(f"net/ipv6/conf/{host_if}/disable_ipv6", "1")
    ip("addr", "add", cidr, "dev", host_if)
    ip("link", "set", host_if, "up")


def delete_link(name: str) -> None:
    """Delete a root-namespace link if it exists (deleting one veth end deletes both)."""
    if link_exists(name):
        ip("link", "delete", name, check=False)


def link_exists(name: str, netns: str | None = None) -> bool:
    return ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0


def routes(netns: str | None = None) -> Sequence[str]:
    """`ip route` lines of a namespace (for checks and tests)."""
    return ip("-4", "route", "show", netns=netns).stdout.splitlines()


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys") / key
    if path.exists():
        path.write_text(value)
