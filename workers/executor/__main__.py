"""An executor process: asks the primary for work, runs one ffmpeg at a time, heart-beats."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from cluster import media
from cluster.child import LogShipper, child_config, die_with_parent, watch_parent
from cluster.config import ClusterConfig
from cluster.logs import configure_logging, get_logger
from cluster.protocol import ExecutorKind, ExecutorMessage, ProtocolError
from cluster.storage import open_storage
from workers.executor.faults import faults_from_env, inject
from workers.executor.jobs import JobFailure, execute, public_error

if TYPE_CHECKING:
    from cluster.storage import Storage

log = get_logger()

PROGRESS_INTERVAL_S = 0.1


class Executor:
    def __init__(self, config: ClusterConfig, context: zmq.asyncio.Context, socket: zmq.asyncio.Socket | None = None,
                 storage: Storage | None = None) -> None:
        """``socket`` and ``storage``: a remote executor's (workers/executor/remote.py), else the local ones."""
        self._config = config
        self._socket = socket or _local_socket(context, config)
        self._storage = storage or open_storage(config)
        self._storage.prepare()
        self._ffmpeg = media.find_ffmpeg(config.ffmpeg)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._faults = faults_from_env(os.environ)

    async def serve(self) -> None:
        await self._send(ExecutorKind.HELLO, payload={"pid": os.getpid()})
        await self._send(ExecutorKind.READY)
        while True:
            try:
                message = ExecutorMessage.decode(await self._socket.recv())
            except ProtocolError as e:
                log.warning("bad message from the primary", error=str(e))
                continue
            self.handle(message)

    def handle(self, message: ExecutorMessage) -> None:
        if message.kind == ExecutorKind.RUN:
            task = asyncio.create_task(self._run(message.run_id, message.payload))
            self._running[message.run_id] = task
        elif message.kind == ExecutorKind.CANCEL and message.run_id in self._running:
            self._running[message.run_id].cancel()

    async def heartbeat(self) -> None:
        while True:
            await self._send(ExecutorKind.HEARTBEAT)
            await asyncio.sleep(self._config.heartbeat_interval_s)

    async def stop(self) -> None:
        """Kill the running ffmpeg (its partial output goes with it); the primary re-queues the job."""
        await self.kill_jobs()
        self._socket.close(linger=0)

    async def kill_jobs(self) -> None:
        self._stopping = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, run_id: str, payload: dict[str, Any]) -> None:
        """One attempt, whatever happens in it: a report (unless cancelled), then ``ready`` for the next job."""
        job_log = log.bind(jobId=payload.get("jobId"), videoId=payload.get("videoId"))
        job_log.info("job started", type=payload.get("type"))
        report: tuple[ExecutorKind, dict[str, Any]] | None = None
        try:
            report = await self._attempt(run_id, payload, job_log)
        except asyncio.CancelledError:
            if self._stopping:
                raise  # the executor stops; the primary re-queues the job when it sees us gone
            job_log.info("job cancelled: ffmpeg killed")
        finally:
            self._running.pop(run_id, None)
        if report is not None:
            await self._send_report(run_id, *report)
        await self._send(ExecutorKind.READY)

    async def _attempt(self, run_id: str, payload: dict[str, Any],
                       job_log: Any) -> tuple[ExecutorKind, dict[str, Any]]:
        try:
            await inject(self._faults, str(payload.get("type")))
            result = await execute(payload, self._storage, self._ffmpeg,
                                   self._progress_reporter(run_id), run_id)
        except JobFailure as e:
            job_log.warning("job failed", error=str(e), permanent=e.permanent)
            return ExecutorKind.FAILED, self._failure(payload, e)
        except (OSError, media.MediaError) as e:
            job_log.exception("job failed")
            return ExecutorKind.FAILED, self._failure(payload, JobFailure(str(e), permanent=False))
        except Exception as e:  # noqa: BLE001 - a bug in one job ends that attempt, never the executor
            job_log.exception("job failed unexpectedly")
            return ExecutorKind.FAILED, self._failure(
                payload, JobFailure(f"internal error: {type(e).__name__}: {e}", permanent=False))
        job_log.info("job completed")
        return ExecutorKind.DONE, {"result": result, "videoId": payload.get("videoId")}

    def _failure(self, payload: dict[str, Any], failure: JobFailure) -> dict[str, Any]:
        error = public_error(str(failure), self._storage, payload.get("videoId"))
        return {"error": error, "permanent": failure.permanent, "stderr": failure.stderr_tail,
                "command": failure.command, "videoId": payload.get("videoId")}  # videoId: to discard the run's files

    async def _send_report(self, run_id: str, kind: ExecutorKind, payload: dict[str, Any]) -> None:
        try:
            frame = ExecutorMessage(kind, run_id, payload).encode()
        except (TypeError, ValueError) as e:  # a result JSON cannot carry
            log.exception("job report not sendable")
            frame = ExecutorMessage(ExecutorKind.FAILED, run_id,
                                    {"error": f"internal error: the report cannot be sent: {e}",
                                     "permanent": False, "videoId": payload.get("videoId")}).encode()
        await self._socket.send(frame)

    def _progress_reporter(self, run_id: str) -> Any:
        last = {"at": 0.0, "percent": -1.0}

        def report(percent: float, speed: float | None, eta_s: float | None) -> None:
            now = time.monotonic()
            if percent <= last["percent"] or (now - last["at"] < PROGRESS_INTERVAL_S and percent < 100):
                return
            last.update(at=now, percent=percent)
            payload = {"progress": percent, "speed": speed, "etaSeconds": None if eta_s is None else round(eta_s, 2)}
            self._socket.send(ExecutorMessage(ExecutorKind.PROGRESS, run_id, payload).encode())

        return report

    async def _send(self, kind: ExecutorKind, run_id: str = "", payload: dict[str, Any] | None = None) -> None:
        await self._socket.send(ExecutorMessage(kind, run_id, payload or {}).encode())


def _local_socket(context: zmq.asyncio.Context, config: ClusterConfig) -> zmq.asyncio.Socket:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.IDENTITY, f"executor-{os.getpid()}".encode())
    socket.connect(config.endpoint("executors"))
    return socket


async def serve(config: ClusterConfig, parent: int) -> None:
    context = zmq.asyncio.Context()
    shipper = LogShipper(context, config)
    configure_logging("executor", config.log_level, config.log_format, sink=shipper)
    executor = Executor(config, context)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(c) for c in (executor.serve(), executor.heartbeat(), watch_parent(parent, stop))]
    log.info("executor ready", ffmpeg=executor._ffmpeg)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await executor.stop()
    with suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("executor stopped")
    shipper.close()
    context.destroy(linger=0)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the primary decides
    parent = die_with_parent()
    asyncio.run(serve(child_config(), parent))


if __name__ == "__main__":
    main()
