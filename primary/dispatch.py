"""Executor dispatch: credit-based (an executor holds at most one job), heartbeats, lost executors.

A run also has a deadline: its job's timeout plus a grace period. An executor that heart-beats but
says nothing of its run past that (a hung job) is treated as lost: killed, its job re-queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import LOST_NO_HEARTBEAT, RUN_STALLED, ExecutorKind, ExecutorMessage, ProtocolError
from primary.control import receive_burst
from primary.engine import JobEngine
from primary.jobs import Job

log = get_logger()


@dataclass
class ExecutorState:
    identity: bytes
    pid: int
    last_seen: float
    ready: bool = False
    run_id: str | None = None
    run_deadline: float = 0.0  # monotonic; past it, a run without word from the executor is stalled
    on_retired: Callable[[], None] | None = None  # set when it is to stop once idle


class ExecutorPool:
    def __init__(self, socket: zmq.asyncio.Socket, engine: JobEngine, video_lookup: Any,
                 timeout_s: float, threads_per_ffmpeg: int, kill: Callable[[int], None],
                 run_grace_s: float = 30.0) -> None:
        self._socket = socket
        self._engine = engine
        self._video_lookup = video_lookup
        self._timeout_s = timeout_s
        self._threads = threads_per_ffmpeg
        self._kill = kill
        self._run_grace_s = run_grace_s
        self.executors: dict[bytes, ExecutorState] = {}
        engine.on_work = self.dispatch
        engine.on_cancel_run = self.cancel

    async def serve(self) -> None:
        while True:
            burst = await receive_burst(self._socket)
            with self._engine.batch():  # the reports that arrived together are stored in one transaction
                for identity, frame in burst:
                    try:
                        self.handle(identity, ExecutorMessage.decode(frame))
                    except (ProtocolError, KeyError, TypeError, ValueError) as e:  # a malformed payload too
                        log.warning("bad executor message", error=str(e))

    async def watch_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self._timeout_s / 4))
            self.check_deadlines(time.monotonic())

    def check_deadlines(self, now: float) -> None:
        """Lose executors silent past the heartbeat timeout, and those whose run passed its deadline."""
        for state in list(self.executors.values()):
            if state.last_seen < now - self._timeout_s:
                self.lose(state.identity, LOST_NO_HEARTBEAT)
            elif state.run_id and now > state.run_deadline:
                self.lose(state.identity, RUN_STALLED)

    def handle(self, identity: bytes, message: ExecutorMessage) -> None:
        state = self.executors.get(identity)
        if message.kind == ExecutorKind.HELLO:
            self.executors[identity] = ExecutorState(identity, int(message.payload.get("pid", 0)), time.monotonic())
            log.info("executor joined", executor=identity.decode(), pid=message.payload.get("pid"))
            return
        if state is None:
            return  # a lost executor's late message changes nothing
        state.last_seen = time.monotonic()
        if message.kind == ExecutorKind.READY:  # idle: whatever it ran has ended (or been killed, when cancelled)
            state.ready = True
            state.run_id = None
            if state.on_retired is not None:
                self._retire_now(state)
                return
            self.dispatch()
        elif message.kind in (ExecutorKind.PROGRESS, ExecutorKind.DONE, ExecutorKind.FAILED):
            self._report(state, message)

    def _report(self, state: ExecutorState, message: ExecutorMessage) -> None:
        if message.run_id != state.run_id:
            return
        p = message.payload
        if message.kind == ExecutorKind.PROGRESS:
            self._engine.progress(message.run_id, float(p["progress"]), p.get("speed"), p.get("etaSeconds"))
            return
        if message.kind == ExecutorKind.DONE:
            self._engine.complete(message.run_id, dict(p.get("result") or {}))
        else:
            self._engine.fail(message.run_id, str(p.get("error", "unknown error")), bool(p.get("permanent")),
                              p.get("command"), p.get("stderr"))

    def dispatch(self) -> None:
        for state in self.executors.values():
            if not (state.ready and state.run_id is None) or state.on_retired is not None:
                continue
            job = self._engine.next_job()
            if job is None:
                return
            self._run(state, job)

    def _run(self, state: ExecutorState, job: Job) -> None:
        state.ready = False
        state.run_id = self._engine.start(job, state.identity.decode())
        state.run_deadline = time.monotonic() + job.timeout_s + self._run_grace_s
        payload = {"jobId": job.id, "type": job.type, "videoId": job.video_id, "params": job.params,
                   "timeoutS": job.timeout_s, "threads": self._threads, "video": self._video_lookup(job.video_id)}
        message = ExecutorMessage(ExecutorKind.RUN, state.run_id, payload)
        self._engine.after_commit(lambda: self._socket.send_multipart([state.identity, message.encode()]))

    def lose(self, identity: bytes, reason: str) -> None:
        """Forget an executor and re-queue its job; kill it, in case it is only stuck (SIGSTOP, a hung loop),
        so that it can never finish the job a second time. The supervisor replaces it."""
        state = self.executors.pop(identity, None)
        if state is None:
            return
        log.warning("executor removed", executor=identity.decode(), pid=state.pid, reason=reason)
        if state.pid:
            self._kill(state.pid)
        if state.run_id:
            self._engine.run_lost(state.run_id, reason)

    def lose_pid(self, pid: int, reason: str) -> None:
        for state in list(self.executors.values()):
            if state.pid == pid:
                self.lose(state.identity, reason)

    def idlest(self, children: list[Any]) -> Any:
        """Of these executor children, one without a job if there is one."""
        busy = {state.pid for state in self.executors.values() if state.run_id}
        idle = [c for c in children if c.pid not in busy]
        return max(idle or children, key=lambda c: c.slot, default=None)

    def retire(self, pid: int, on_retired: Callable[[], None]) -> None:
        """No new job for this executor; ``on_retired`` runs once it is idle (now, if it is)."""
        state = next((s for s in self.executors.values() if s.pid == pid), None)
        if state is None:
            on_retired()
            return
        state.on_retired = on_retired
        if state.run_id is None:
            self._retire_now(state)

    def _retire_now(self, state: ExecutorState) -> None:
        self.executors.pop(state.identity, None)
        log.info("executor retired", executor=state.identity.decode(), pid=state.pid)
        if state.on_retired is not None:
            state.on_retired()

    def cancel(self, run_id: str) -> None:
        for state in self.executors.values():
            if state.run_id == run_id:
                self._socket.send_multipart([state.identity, ExecutorMessage(ExecutorKind.CANCEL, run_id).encode()])
