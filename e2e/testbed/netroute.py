"""Makes the pod IP range local to this machine: `ip route add local <range> dev lo`.

Every address in the range then behaves like 127.x (bindable, reachable only from here), while
staying valid for EndpointSlices, which reject loopback addresses. Needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
from pathlib import Path


class RouteError(RuntimeError):
    """The local route could not be set up; the message says what to do."""


def _ip(*args: str) -> subprocess.CompletedProcess:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    argv = [ip, *args]
    if os.geteuid() != 0 and shutil.which("sudo"):
        argv = ["sudo", "-n", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


def is_local_route_present(cidr: str) -> bool:
    out = _ip("route", "show", "table", "local", "dev", "lo")
    return any(line.split()[:2] == ["local", cidr] for line in out.stdout.splitlines())


def ensure_local_route(cidr: str) -> None:
    if is_local_route_present(cidr):
        return
    result = _ip("route", "add", "local", cidr, "dev", "lo", "table", "local")
    if result.returncode != 0 and not is_local_route_present(cidr):
        raise RouteError(
            f"cannot make the pod range {cidr} local (`ip route add local {cidr} dev lo table local`: "
            f"{result.stderr.strip() or 'failed'}); run as root or with CAP_NET_ADMIN, "
            "or passwordless sudo for `ip`"
        )


def listening_ipv4_addresses() -> set[str]:
    """Addresses with a listening TCP socket, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            found.add(str(ipaddress.IPv4Address(socket.ntohl(int(fields[1].split(":")[0], 16)))))
    return found


def _parse_listeners(path: Path, v6: bool) -> set[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            addr_hex, port_hex = fields[1].split(":")
            if v6:
                addr = "::" if int(addr_hex, 16) == 0 else "v6"
            else:
                addr = str(ipaddress.IPv4Address(socket.ntohl(int(addr_hex, 16))))
            found.add((addr, int(port_hex, 16)))
    return found


def listening_sockets() -> set[tuple[str, int]]:
    """(address, port) of listening TCP sockets; IPv6 ones as "::" (any) or "v6" (specific)."""
    return _parse_listeners(Path("/proc/net/tcp"), False) | _parse_listeners(Path("/proc/net/tcp6"), True)


def is_port_taken(listeners: set[tuple[str, int]], addr: str, port: int) -> bool:
    """Whether binding `addr:port` would fail: the same address, or a wildcard, holds the port."""
    return any(p == port and a in (addr, "0.0.0.0", "::") for a, p in listeners)


def remove_local_route(cidr: str) -> None:
    """Removes the route unless something still listens in the range (another testbed
    instance started with the same range would lose its pods' addresses)."""
    network = ipaddress.IPv4Network(cidr)
    if any(ipaddress.IPv4Address(a) in network for a in listening_ipv4_addresses()):
        return
    if is_local_route_present(cidr):
        _ip("route", "del", "local", cidr, "dev", "lo", "table", "local")
