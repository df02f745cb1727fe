"""What every child process does at start: read its config, die with its parent, ship its logs."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable

import zmq

from cluster.config import ClusterConfig

CONFIG_ENV = "VC_CHILD_CONFIG"
PARENT_ENV = "VC_PARENT_PID"
LISTEN_FD_ENV = "VC_LISTEN_FD"
PRIMARY_ENV = "VC_REMOTE_PRIMARY"  # a remote child's primary endpoint and key file (workers/remote_host.py)
CERT_ENV = "VC_REMOTE_CERT"
EXIT_BOOT_FAILURE = 3  # tells the supervisor to back off instead of respawning at once
EXIT_REFUSED = 4  # a remote process whose key the primary refuses: respawning it would not help
PR_SET_PDEATHSIG = 1
LOG_HWM = 10_000


def child_config() -> ClusterConfig:
    return ClusterConfig.from_json(os.environ[CONFIG_ENV])


def lower_priority(amount: int) -> None:
    """Run ``amount`` nice levels below the parent (the kernel caps it at 19); raising no error where the
    platform has no nice."""
    if amount > 0 and hasattr(os, "nice"):
        os.nice(amount)


def die_with_parent() -> int:
    """Ask the kernel for SIGTERM when the primary dies; exit now if it already has."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent and os.getppid() != parent:
        sys.exit(EXIT_BOOT_FAILURE)
    return parent


async def watch_parent(parent: int, on_orphaned: asyncio.Event, interval_s: float = 0.5) -> None:
    """Belt and braces beside PDEATHSIG: notice re-parenting by polling."""
    while os.getppid() == parent:
        await asyncio.sleep(interval_s)
    on_orphaned.set()


class LogShipper:
    """A non-blocking PUSH to the primary, which republishes each line on its PUB socket."""

    def __init__(self, context: zmq.Context, config: ClusterConfig, endpoint: str | None = None,
                 secure: Callable[[zmq.Socket], None] | None = None) -> None:
        """``endpoint`` and ``secure``: a remote process's (the primary's TCP log endpoint, CURVE keys)."""
        # a plain socket on the same underlying context: logging is synchronous
        self._push = zmq.Context.shadow(context.underlying).socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, LOG_HWM)
        self._push.setsockopt(zmq.LINGER, 0)
        if secure is not None:
            secure(self._push)
        self._push.connect(endpoint or config.endpoint("logs"))

    def __call__(self, line: bytes) -> None:
        try:
            self._push.send(line, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the primary is not reading: drop the line rather than block

    def close(self) -> None:
        self._push.close(linger=0)
