"""Hosts for fault tests: one network namespace per remote host, joined to the root namespace by a veth pair.

Each link gets its own /24 under 10.231.0.0/16 that exists only on the two ends of its veth pair, so no packet
of a test leaves the namespaces it made. ``cut()`` and ``heal()`` take the link down and up. Everything made
is removed in ``cleanup()``, whatever happened (processes in a namespace first, then the namespace, whose
removal takes its veth end and so the pair with it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

SUBNET = "10.231"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


def netns_refusal() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    probe = f"vc-probe-{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return f"no usable 'ip' command: {e}"
    if made.returncode != 0:
        return f"'ip netns add' is not permitted here: {made.stderr.strip()}"
    veth = _ip("link", "add", "vcprobe0", "type", "veth", "peer", "name", "vcprobe1", "netns", probe, check=False)
    _ip("link", "del", "vcprobe0", check=False)
    _ip("netns", "del", probe, check=False)
    if veth.returncode != 0:
        return f"veth pairs cannot be made here: {veth.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Link:
    namespace: str
    root_dev: str
    root_ip: str
    ns_ip: str

    def exec_prefix(self) -> list[str]:
        """Run a command on the remote host: ``[*link.exec_prefix(), "python", ...]``."""
        return ["ip", "netns", "exec", self.namespace]

    def reach(self, other: Link) -> None:
        """Let this host reach the root end of another link (a server the root namespace runs there)."""
        _ip("-n", self.namespace, "route", "add", f"{other.root_ip}/32", "via", self.root_ip)

    def cut(self) -> None:
        _ip("link", "set", self.root_dev, "down")

    def heal(self) -> None:
        _ip("link", "set", self.root_dev, "up")


class Namespaces:
    """A factory of hosts; ``cleanup()`` removes every one it made."""

    def __init__(self) -> None:
        self._tag = f"{os.getpid() % 100000}"
        self._made: list[Link] = []

    def make(self) -> Link:
        index = len(self._made)
        octet = self._free_octet()
        link = Link(f"vc-{self._tag}-{index}", f"vch{self._tag}{index}", f"{SUBNET}.{octet}.1", f"{SUBNET}.{octet}.2")
        self._made.append(link)
        ns_dev = f"vcn{self._tag}{index}"
        _ip("netns", "add", link.namespace)
        _ip("link", "add", link.root_dev, "type", "veth", "peer", "name", ns_dev, "netns", link.namespace)
        _ip("addr", "add", f"{link.root_ip}/24", "dev", link.root_dev)
        _ip("link", "set", link.root_dev, "up")
        _ip("-n", link.namespace, "addr", "add", f"{link.ns_ip}/24", "dev", ns_dev)
        _ip("-n", link.namespace, "link", "set", ns_dev, "up")
        _ip("-n", link.namespace, "link", "set", "lo", "up")
        return link

    def cleanup(self) -> None:
        for link in self._made:
            self._kill_inside(link.namespace)
            _ip("netns", "del", link.namespace, check=False)
            _ip("link", "del", link.root_dev, check=False)  # gone with the namespace, unless that failed
        self._made.clear()

    @staticmethod
    def _kill_inside(namespace: str) -> None:
        pids = _ip("netns", "pids", namespace, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    @staticmethod
    def _free_octet() -> int:
        used = _ip("-o", "addr", "show").stdout
        for octet in range(10, 250):
            if f" {SUBNET}.{octet}." not in used:
                return octet
        raise RuntimeError(f"no free /24 under {SUBNET}.0.0/16")
