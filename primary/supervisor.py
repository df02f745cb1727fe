"""Starts the children fresh (fork+exec, never a bare fork of this threaded process), replaces any
that die (with a back-off against crash loops), scales them, and rolls them over one at a time."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cluster.child import CONFIG_ENV, EXIT_BOOT_FAILURE, LISTEN_FD_ENV, PARENT_ENV
from cluster.config import ClusterConfig
from cluster.logs import get_logger

log = get_logger()

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 10.0

ReadyCheck = Callable[["Child"], Awaitable[bool]]


@dataclass(frozen=True)
class ChildSpec:
    role: str
    module: str
    pass_fds: tuple[int, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # more environment for the child (a remote executor's primary, cert)


@dataclass
class Child:
    spec: ChildSpec
    slot: int
    process: asyncio.subprocess.Process
    started_at: float = field(default_factory=time.monotonic)
    retiring: bool = False  # told to stop for good: not replaced when it exits
    candidate: bool = False  # started by a roll-over, not yet proven to serve

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Supervisor:
    def __init__(self, config: ClusterConfig, on_exit: Callable[[Child, int], None]) -> None:
        self._config = config
        self._on_exit = on_exit
        self._specs: dict[str, ChildSpec] = {}
        self._slots: dict[str, set[int]] = {}  # the slots each role should fill
        self._children: dict[int, Child] = {}
        self._failures: dict[tuple[str, int], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.restarts: dict[str, int] = {}
        self.crash_looping: dict[str, int] = {}

    # what runs

    def processes(self) -> list[dict[str, object]]:
        children = [{"role": c.spec.role, "pid": c.pid, "slot": c.slot} for c in self._children.values()
                    if not c.retiring]
        return [{"role": "primary", "pid": os.getpid()}, *children]

    def children(self, role: str) -> list[Child]:
        return [c for c in self._children.values() if c.spec.role == role and not c.retiring and c.alive]

    def pids(self, role: str) -> list[int]:
        return [c.pid for c in self.children(role)]

    # starting, scaling, stopping

    async def start(self, spec: ChildSpec, count: int) -> None:
        self._specs[spec.role] = spec
        self._slots[spec.role] = set(range(count))
        for slot in range(count):
            await self._spawn(spec, slot)

    async def add(self, role: str) -> Child:
        slot = max(self._slots[role], default=-1) + 1
        self._slots[role].add(slot)
        log.info("scaling up", child_role=role, count=len(self._slots[role]))
        return await self._spawn(self._specs[role], slot)

    def remove(self, role: str, choose: Callable[[list[Child]], Child | None] | None = None) -> Child | None:
        """Give up one slot of ``role``; its child is returned for the caller to retire (web: drain now;
        executor: after its job)."""
        children = self.children(role)
        if len(children) <= (1 if role == "web" else 0):
            return None
        child = (choose or (lambda cs: max(cs, key=lambda c: c.slot)))(children)
        if child is None:
            return None
        self._slots[role].discard(child.slot)
        child.retiring = True
        log.info("scaling down", child_role=role, child_pid=child.pid, count=len(self._slots[role]))
        return child

    def retire(self, child: Child, sig: int = signal.SIGTERM) -> None:
        child.retiring = True
        _signal(child, sig)

    def kill(self, pid: int) -> None:
        """SIGKILL one of our children (never a stranger that reused the pid); it is replaced as usual."""
        child = self._children.get(pid)
        if child is not None:
            _signal(child, signal.SIGKILL)

    async def roll(self, children: list[Child], ready: ReadyCheck) -> bool:
        """Replace these children one at a time: each new one must serve before its old one drains.
        A new child that does not come up stops the roll-over and the old children stay."""
        for old in sorted(children, key=lambda c: c.slot):
            if not old.alive or old.retiring:
                continue
            role = old.spec.role
            new = await self._spawn(self._specs[role], old.slot, candidate=True)
            if not await ready(new):
                log.error("roll-over stopped: a new child did not come up", child_role=role, child_pid=new.pid)
                self.retire(new, signal.SIGKILL)
                return False
            new.candidate = False
            log.info("rolled over", child_role=role, old_pid=old.pid, new_pid=new.pid)
            self.retire(old)
        return True

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every child, then SIGKILL whatever is still alive after the timeout."""
        self._stopping = True
        children = list(self._children.values())
        for child in children:
            _signal(child, signal.SIGTERM)
        waits = [asyncio.create_task(c.process.wait()) for c in children]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout_s)
            for child in children:
                if child.alive:
                    log.warning("child did not stop in time", child_role=child.spec.role, child_pid=child.pid)
                    _signal(child, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()

    # internals

    async def _spawn(self, spec: ChildSpec, slot: int, candidate: bool = False) -> Child:
        env = {**os.environ, **dict(spec.env), CONFIG_ENV: self._config.to_json(), PARENT_ENV: str(os.getpid())}
        if spec.pass_fds:
            env[LISTEN_FD_ENV] = str(spec.pass_fds[0])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", spec.module, env=env, pass_fds=spec.pass_fds, stdin=asyncio.subprocess.DEVNULL,
        )
        child = Child(spec, slot, process, candidate=candidate)
        self._children[child.pid] = child
        log.info("child started", child_role=spec.role, slot=slot, child_pid=child.pid)
        task = asyncio.create_task(self._watch(child))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return child

    async def _watch(self, child: Child) -> None:
        code = await child.process.wait()
        self._children.pop(child.pid, None)
        if self._stopping:
            return
        if not child.retiring:
            log.warning("child exited", child_role=child.spec.role, child_pid=child.pid, code=code)
        self._on_exit(child, code)
        if child.retiring or child.candidate or not self._slot_is_empty(child):
            return
        key = (child.spec.role, child.slot)
        delay = self._backoff(key, child, code)
        if delay:
            log.error("child keeps dying: restarting it with a delay", child_role=child.spec.role, slot=child.slot,
                      delayS=delay, failures=self._failures[key])
            self.crash_looping[child.spec.role] = self.crash_looping.get(child.spec.role, 0) + 1
        await asyncio.sleep(delay)
        if not self._stopping and self._slot_is_empty(child):
            self.restarts[child.spec.role] = self.restarts.get(child.spec.role, 0) + 1
            await self._spawn(child.spec, child.slot)

    def _slot_is_empty(self, child: Child) -> bool:
        """The slot is still wanted and no live child (a roll-over's new one, say) fills it."""
        role = child.spec.role
        if child.slot not in self._slots.get(role, set()):
            return False
        return not any(c.slot == child.slot and c.spec.role == role and not c.retiring
                       for c in self._children.values())

    def _backoff(self, key: tuple[str, int], child: Child, code: int) -> float:
        stable = time.monotonic() - child.started_at > STABLE_AFTER_S
        if stable and code != EXIT_BOOT_FAILURE:
            self._failures[key] = 0
            return 0.0
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**failures) if failures else 0.0


def _signal(child: Child, sig: int) -> None:
    try:
        child.process.send_signal(sig)
    except ProcessLookupError:
        pass
