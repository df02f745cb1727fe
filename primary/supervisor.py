"""Starts the children fresh (fork+exec, never a bare fork of this threaded process),
replaces any that die, with a back-off against crash loops."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.child import CONFIG_ENV, EXIT_BOOT_FAILURE, LISTEN_FD_ENV, PARENT_ENV
from cluster.config import ClusterConfig
from cluster.logs import get_logger

log = get_logger()

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 10.0


@dataclass(frozen=True)
class ChildSpec:
    role: str
    module: str
    pass_fds: tuple[int, ...] = ()


@dataclass
class Child:
    spec: ChildSpec
    slot: int
    process: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid


class Supervisor:
    def __init__(self, config: ClusterConfig, on_exit: Callable[[Child, int], None]) -> None:
        self._config = config
        self._on_exit = on_exit
        self._children: dict[tuple[str, int], Child] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.restarts: dict[str, int] = {}

    def processes(self) -> list[dict[str, object]]:
        children = [{"role": c.spec.role, "pid": c.pid, "slot": c.slot} for c in self._children.values()]
        return [{"role": "primary", "pid": os.getpid()}, *children]

    def pids(self, role: str) -> list[int]:
        return [c.pid for c in self._children.values() if c.spec.role == role]

    def kill(self, pid: int) -> None:
        """SIGKILL one of our children (never a stranger that reused the pid); it is replaced as usual."""
        for child in self._children.values():
            if child.pid == pid:
                _signal(child, signal.SIGKILL)

    async def start(self, spec: ChildSpec, count: int) -> None:
        for slot in range(count):
            await self._spawn(spec, slot)

    async def _spawn(self, spec: ChildSpec, slot: int) -> None:
        env = {**os.environ, CONFIG_ENV: self._config.to_json(), PARENT_ENV: str(os.getpid())}
        if spec.pass_fds:
            env[LISTEN_FD_ENV] = str(spec.pass_fds[0])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", spec.module, env=env, pass_fds=spec.pass_fds, stdin=asyncio.subprocess.DEVNULL,
        )
        child = Child(spec, slot, process)
        self._children[(spec.role, slot)] = child
        log.info("child started", child_role=spec.role, slot=slot, child_pid=child.pid)
        task = asyncio.create_task(self._watch(child))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, child: Child) -> None:
        code = await child.process.wait()
        key = (child.spec.role, child.slot)
        if self._children.get(key) is child:
            del self._children[key]
        if self._stopping:
            return
        log.warning("child exited", child_role=child.spec.role, child_pid=child.pid, code=code)
        self._on_exit(child, code)
        await asyncio.sleep(self._backoff(key, child, code))
        if not self._stopping:
            self.restarts[child.spec.role] = self.restarts.get(child.spec.role, 0) + 1
            await self._spawn(child.spec, child.slot)

    def _backoff(self, key: tuple[str, int], child: Child, code: int) -> float:
        stable = time.monotonic() - child.started_at > STABLE_AFTER_S
        if stable and code != EXIT_BOOT_FAILURE:
            self._failures[key] = 0
            return 0.0
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**failures) if failures else 0.0

    async def stop(self, grace_s: float) -> None:
        """SIGTERM every child, then SIGKILL whatever is still alive after the grace period."""
        self._stopping = True
        children = list(self._children.values())
        for child in children:
            _signal(child, signal.SIGTERM)
        waits = [asyncio.create_task(c.process.wait()) for c in children]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=grace_s)
            for child in children:
                if child.process.returncode is None:
                    log.warning("child did not stop in time", child_role=child.spec.role, child_pid=child.pid)
                    _signal(child, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()


def _signal(child: Child, sig: int) -> None:
    try:
        child.process.send_signal(sig)
    except ProcessLookupError:
        pass
