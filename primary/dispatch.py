"""Executor dispatch: credit-based (an executor holds at most one job), heartbeats, lost executors.

A run also has a deadline: its job's timeout plus a grace period. An executor that heart-beats but
says nothing of its run past that (a hung job) is treated as lost: killed, its job re-queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import LOST_NO_HEARTBEAT, RUN_STALLED, ExecutorKind, ExecutorMessage, ProtocolError
from primary.control import receive_burst
from primary.engine import JobEngine
from primary.jobs import Job
from primary.run_files import OutputMissing, RunFiles

log = get_logger()

USAGE_FIELDS = ("cpuPercent", "rssBytes", "threads")


@dataclass
class ExecutorState:
    identity: bytes
    pid: int
    last_seen: float
    ready: bool = False
    run_id: str | None = None
    run_deadline: float = 0.0  # monotonic; past it, a run without word from the executor is stalled
    on_retired: Callable[[], None] | None = None  # set when it is to stop once idle
    socket: zmq.asyncio.Socket | None = None  # a remote executor's (the TCP one); None: the local socket
    key: str | None = None  # a remote executor's CURVE public key, checked on every message
    host: dict[str, str] | None = None  # a remote executor's hostname and address
    video_id: str | None = None  # of the run it holds
    usage: dict[str, Any] = field(default_factory=dict)  # a remote executor's CPU and memory, from its heartbeat

    @property
    def remote(self) -> bool:
        return self.key is not None


class ExecutorPool:
    def __init__(self, socket: zmq.asyncio.Socket, engine: JobEngine, video_lookup: Any,
                 timeout_s: float, threads_per_ffmpeg: int, kill: Callable[[int], None], *,
                 run_grace_s: float = 30.0, files: RunFiles | None = None,
                 welcome: dict[str, Any] | None = None) -> None:
        self._socket = socket
        self._files = files
        self._welcome = welcome or {}  # the settings a remote executor takes from us at hello
        self._engine = engine
        self._video_lookup = video_lookup
        self._timeout_s = timeout_s
        self._threads = threads_per_ffmpeg
        self._kill = kill
        self._run_grace_s = run_grace_s
        self.executors: dict[bytes, ExecutorState] = {}
        self._accepting: set[asyncio.Task[None]] = set()  # accepted runs whose outputs are being made visible
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

    async def serve_remote(self, socket: zmq.asyncio.Socket, authorised: Callable[[str], bool]) -> None:
        """The TCP socket of remote executors: each message carries the CURVE key its connection proved
        (ZAP's User-Id), and a key revoked since is refused even on a connection made before."""
        while True:
            identity, frame = await socket.recv_multipart(copy=False)
            key = str(frame.get("User-Id"))
            try:
                message = ExecutorMessage.decode(frame.bytes)
            except ProtocolError as e:
                log.warning("bad executor message", error=str(e))
                continue
            if not authorised(key):
                self._refuse(socket, identity.bytes, "the key of this process is revoked")
                continue
            self.handle(identity.bytes, message, socket, key, str(frame.get("Peer-Address")))

    def handle(self, identity: bytes, message: ExecutorMessage, socket: zmq.asyncio.Socket | None = None,
               key: str | None = None, address: str = "") -> None:
        state = self.executors.get(identity)
        if message.kind == ExecutorKind.HELLO:
            self._hello(identity, message, socket, key, address)
            return
        if state is None or state.socket is not socket:
            self._unknown(identity, message, socket)  # a lost executor's late message changes nothing
            return
        state.last_seen = time.monotonic()
        if message.kind == ExecutorKind.HEARTBEAT and state.remote:
            state.usage = {k: message.payload[k] for k in USAGE_FIELDS if k in message.payload}
            self._send(state, ExecutorMessage(ExecutorKind.HEARTBEAT))  # it needs to hear us to notice a partition
        elif message.kind == ExecutorKind.BYE:
            self.lose(identity, "executor left")
        elif message.kind == ExecutorKind.READY:  # idle: whatever it ran has ended (or been killed, when cancelled)
            state.ready = True
            state.run_id = None
            if state.on_retired is not None:
                self._retire_now(state)
                return
            self.dispatch()
        elif message.kind in (ExecutorKind.PROGRESS, ExecutorKind.DONE, ExecutorKind.FAILED):
            self._report(state, message)

    def _hello(self, identity: bytes, message: ExecutorMessage, socket: zmq.asyncio.Socket | None,
               key: str | None, address: str) -> None:
        if identity in self.executors:
            self.lose(identity, "executor joined again")
        p = message.payload
        host = {"hostname": str(p.get("hostname", "")), "address": address} if key is not None else None
        self.executors[identity] = ExecutorState(identity, int(p.get("pid", 0)), time.monotonic(), socket=socket,
                                                 key=key, host=host)
        log.info("executor joined", executor=identity.decode(errors="replace"), pid=p.get("pid"),
                 **({"host": host} if host else {}))
        self._send(self.executors[identity], ExecutorMessage(ExecutorKind.WELCOME, payload=self._welcome))

    def _unknown(self, identity: bytes, message: ExecutorMessage, socket: zmq.asyncio.Socket | None) -> None:
        """A message from an executor we do not know (lost, or from before a restart): its results are refused
        and their files removed, and it is told to join again (a fresh hello, a fresh identity)."""
        if message.kind in (ExecutorKind.DONE, ExecutorKind.FAILED) and self._files is not None and message.run_id:
            self._files.discard(_video_of(message), message.run_id)
        if message.kind not in (ExecutorKind.BYE, ExecutorKind.READY):
            self._send_to(socket, identity, ExecutorMessage(ExecutorKind.REJOIN, payload={"reason": "unknown executor"}))

    def _report(self, state: ExecutorState, message: ExecutorMessage) -> None:
        job = self._engine.job_for_run(message.run_id) if message.run_id == state.run_id else None
        if job is None:  # a run we have given up on (cancelled, timed out, lost): nothing it made is kept
            if message.kind != ExecutorKind.PROGRESS and self._files is not None and message.run_id:
                self._files.discard(_video_of(message) or state.video_id, message.run_id)
            return
        p = message.payload
        if message.kind == ExecutorKind.PROGRESS:
            self._engine.progress(message.run_id, float(p["progress"]), p.get("speed"), p.get("etaSeconds"))
            return
        if message.kind == ExecutorKind.DONE:
            self._complete(state, job, message.run_id, dict(p.get("result") or {}))
            return
        if self._files is not None:
            self._files.discard(job.video_id, message.run_id)
        self._engine.fail(message.run_id, str(p.get("error", "unknown error")), bool(p.get("permanent")),
                          p.get("command"), p.get("stderr"))

    def _complete(self, state: ExecutorState, job: Job, run_id: str, result: dict[str, Any]) -> None:
        """Accept the run: its outputs are made visible, then the job completes (never the other way round).
        Meanwhile the job stays running and cannot be cancelled, and the run is no longer its executor's:
        losing the executor now loses nothing."""
        if self._files is None:
            self._engine.complete(run_id, result)
            return
        state.run_id = None
        self._engine.completing.add(run_id)
        accepting = self._files.accept(job, run_id)  # from now on, a repeated report discards nothing
        task = asyncio.get_running_loop().create_task(self._accept(self._files, accepting, job, run_id, result))
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    async def _accept(self, files: RunFiles, accepting: Coroutine[Any, Any, None], job: Job, run_id: str,
                      result: dict[str, Any]) -> None:
        try:
            await accepting
        except (OutputMissing, OSError) as e:  # StorageError: S3 failed past its retries
            self._engine.completing.discard(run_id)
            log.warning("run refused: its outputs cannot be accepted", jobId=job.id, error=str(e))
            files.discard(job.video_id, run_id)
            self._engine.fail(run_id, str(e), False)
            return
        self._engine.completing.discard(run_id)
        self._engine.complete(run_id, result)

    async def settle(self) -> None:
        """Wait until the runs accepted so far have completed (or failed)."""
        while self._accepting:
            await asyncio.gather(*self._accepting, return_exceptions=True)

    async def close(self) -> None:
        """At shutdown: stop the acceptances still under way; their jobs are still running, so they run
        again at the next start, and the start-up sweep removes their run's files."""
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)

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
        state.run_id = self._engine.start(job, state.identity.decode(errors="replace"))
        state.video_id = job.video_id
        state.run_deadline = time.monotonic() + job.timeout_s + self._run_grace_s
        payload = {"jobId": job.id, "type": job.type, "videoId": job.video_id, "params": job.params,
                   "timeoutS": job.timeout_s, "threads": self._threads, "video": self._video_lookup(job.video_id)}
        message = ExecutorMessage(ExecutorKind.RUN, state.run_id, payload)
        self._engine.after_commit(lambda: self._send(state, message))  # the start is stored before it runs

    def _send(self, state: ExecutorState, message: ExecutorMessage) -> None:
        self._send_to(state.socket, state.identity, message)

    def _send_to(self, socket: zmq.asyncio.Socket | None, identity: bytes, message: ExecutorMessage) -> None:
        # a ROUTER never blocks: a message to a peer that is gone is dropped (it notices the silence and rejoins)
        (socket or self._socket).send_multipart([identity, message.encode()])

    def _refuse(self, socket: zmq.asyncio.Socket, identity: bytes, reason: str) -> None:
        """Cut a remote process off: it is told to exit, and it is forgotten (its job goes back to the queue)."""
        self._send_to(socket, identity, ExecutorMessage(ExecutorKind.REFUSED, payload={"reason": reason}))
        if identity in self.executors and self.executors[identity].socket is socket:
            self.lose(identity, reason)

    def revoke(self, keys: set[str]) -> None:
        """These keys were revoked: every executor that joined with one is cut off now."""
        for state in list(self.executors.values()):
            if state.key in keys and state.socket is not None:
                self._refuse(state.socket, state.identity, "the key of this process is revoked")

    def lose(self, identity: bytes, reason: str) -> None:
        """Forget an executor and re-queue its job; kill it, in case it is only stuck (SIGSTOP, a hung loop),
        so that it can never finish the job a second time. The supervisor replaces it."""
        state = self.executors.pop(identity, None)
        if state is None:
            return
        log.warning("executor removed", executor=identity.decode(errors="replace"), pid=state.pid, reason=reason)
        if state.remote:
            self._send(state, ExecutorMessage(ExecutorKind.REJOIN, payload={"reason": reason}))  # if it can still hear us
        elif state.pid:
            self._kill(state.pid)  # a pid of this host: only a local executor's
        if state.run_id:
            if self._files is not None:
                self._files.discard(state.video_id, state.run_id)
            self._engine.run_lost(state.run_id, reason)

    def lose_pid(self, pid: int, reason: str) -> None:
        for state in list(self.executors.values()):
            if state.pid == pid and not state.remote:
                self.lose(state.identity, reason)

    def remote_processes(self) -> list[dict[str, object]]:
        """The remote executors that have joined, with their host and what they last said of their usage."""
        return [{"role": "executor", "pid": s.pid, "joined": True, "remote": True, **(s.host or {}), **s.usage}
                for s in self.executors.values() if s.remote]

    def idlest(self, children: list[Any]) -> Any:
        """Of these executor children, one without a job if there is one."""
        busy = {state.pid for state in self.executors.values() if state.run_id and not state.remote}
        idle = [c for c in children if c.pid not in busy]
        return max(idle or children, key=lambda c: c.slot, default=None)

    def retire(self, pid: int, on_retired: Callable[[], None]) -> None:
        """No new job for this executor; ``on_retired`` runs once it is idle (now, if it is)."""
        state = next((s for s in self.executors.values() if s.pid == pid and not s.remote), None)
        if state is None:
            on_retired()
            return
        state.on_retired = on_retired
        if state.run_id is None:
            self._retire_now(state)

    def _retire_now(self, state: ExecutorState) -> None:
        self.executors.pop(state.identity, None)
        log.info("executor retired", executor=state.identity.decode(errors="replace"), pid=state.pid)
        if state.on_retired is not None:
            state.on_retired()

    def cancel(self, run_id: str) -> None:
        """The run's job was cancelled: its executor is told to stop, and what the run wrote goes (what it
        writes afterwards goes with its late report, or with the sweep)."""
        for state in self.executors.values():
            if state.run_id == run_id:
                self._send(state, ExecutorMessage(ExecutorKind.CANCEL, run_id))
                if self._files is not None:
                    self._files.discard(state.video_id, run_id)


def _video_of(message: ExecutorMessage) -> str | None:
    video_id = message.payload.get("videoId")
    return str(video_id) if video_id else None
