"""Liveness of the web workers: each says when it serves, then heart-beats with its figures.

A worker whose heartbeats stop (its event loop is blocked, say) is killed and replaced; a worker
that asks to be recycled (request count, memory) is rolled over like a reload of one worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cluster.logs import get_logger
from primary.control import Handler
from primary.supervisor import Child

log = get_logger()


class WorkerRegistry:
    def __init__(self, timeout_s: float, boot_timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._boot_timeout_s = boot_timeout_s
        self._last_seen: dict[int, float] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self.stats: dict[int, dict[str, Any]] = {}
        self.on_recycle: Callable[[int, str], None] = lambda pid, reason: None

    def handlers(self) -> dict[str, Handler]:
        return {"worker_ready": self._on_ready, "worker_heartbeat": self._on_heartbeat,
                "worker_recycle": self._on_recycle}

    def _on_ready(self, args: dict[str, Any]) -> bool:
        pid = int(args["pid"])
        self._last_seen[pid] = time.monotonic()
        self._event(pid).set()
        return True

    def _on_heartbeat(self, args: dict[str, Any]) -> bool:
        pid = int(args["pid"])
        self._last_seen[pid] = time.monotonic()
        self.stats[pid] = dict(args.get("stats") or {})
        return True

    def _on_recycle(self, args: dict[str, Any]) -> bool:
        self.on_recycle(int(args["pid"]), str(args.get("reason", "")))
        return True

    async def wait_ready(self, child: Child) -> bool:
        """True once the child serves; False if it exits or stays silent past the boot timeout."""
        ready = asyncio.create_task(self._event(child.pid).wait())
        exited = asyncio.create_task(child.process.wait())
        done, pending = await asyncio.wait({ready, exited}, timeout=self._boot_timeout_s,
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return ready in done and child.alive

    def serving(self, pid: int) -> bool:
        """It has said it serves (and has not been forgotten since)."""
        ready = self._ready.get(pid)
        return ready is not None and ready.is_set()

    def stale(self) -> list[int]:
        """Workers that served once and then went silent for longer than the timeout."""
        deadline = time.monotonic() - self._timeout_s
        return [pid for pid, seen in self._last_seen.items() if seen < deadline]

    def forget(self, pid: int) -> None:
        self._last_seen.pop(pid, None)
        self._ready.pop(pid, None)
        self.stats.pop(pid, None)

    def _event(self, pid: int) -> asyncio.Event:
        return self._ready.setdefault(pid, asyncio.Event())
