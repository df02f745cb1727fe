"""A remote executor process: joins a primary over TCP with CurveZMQ, takes its settings from the primary's
answer to hello, and otherwise works as a local executor (workers/executor/__main__.py).

One join is a session: a fresh DEALER (a fresh identity), hello, welcome, then jobs. A session ends when the
primary is silent for its executor timeout (a partition, a restart) or tells it to join again; the running
ffmpeg is killed, what its runs left under run-scoped names is removed, and a new session begins. A refused
key (unknown, revoked, or a certificate for another primary) ends the process with EXIT_REFUSED and a reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import socket as sockets
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import zmq
import zmq.asyncio

from cluster.child import EXIT_REFUSED, LogShipper, child_config, watch_parent
from cluster.config import ClusterConfig
from cluster.logs import configure_logging, get_logger
from cluster.protocol import ExecutorKind, ExecutorMessage, ProtocolError
from cluster.storage import LocalStorage, StorageSettings, open_storage
from workers.executor.__main__ import Executor
from workers.remote_link import HANDSHAKE_EVENTS, Refused, RemoteLink, start_remote_child, watch_handshakes

if TYPE_CHECKING:
    from cluster.storage import Storage

log = get_logger()

STORAGE_ENV = "VC_REMOTE_STORAGE_DIR"
WELCOME_TIMEOUT_S = 10.0  # connected, but no welcome this long after: refused (well within 15 s)
BYE_WAIT_S = 1.0


class Rejoin(Exception):
    """This session is over (the primary lost us, or we lost it): kill the jobs and join again."""


class Silent(Rejoin):
    """Nothing from the primary for too long."""


@dataclass(frozen=True)
class RemoteSettings(RemoteLink):
    storage_dir: Path | None = None  # where the primary's storage is mounted here (default: its own path)

    @classmethod
    def from_env(cls) -> RemoteSettings:
        storage = os.environ.get(STORAGE_ENV)
        return dataclasses.replace(super().from_env(), storage_dir=Path(storage) if storage else None)


class Session:
    def __init__(self, context: zmq.asyncio.Context, settings: RemoteSettings, base: ClusterConfig) -> None:
        self._context = context
        self._settings = settings
        self._base = base
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IDENTITY, f"executor-{sockets.gethostname()}-{os.getpid()}-"
                                             f"{secrets.token_hex(4)}".encode())
        settings.secure(self.socket)
        self._monitor = self.socket.get_monitor_socket(HANDSHAKE_EVENTS)
        self.socket.connect(settings.primary)
        self._connected = asyncio.Event()
        self._welcomed = False
        self._executor: Executor | None = None
        self._storage: Storage | None = None
        self._threads = 1
        self._runs: dict[str, str] = {}  # run id -> video id, of every run this session took

    async def run(self) -> None:
        """Work until the session ends: raises Rejoin or Refused."""
        watch = asyncio.create_task(watch_handshakes(self._monitor, self._settings.cert.name, self._connected))
        work = asyncio.create_task(self._work())
        try:
            done, _ = await asyncio.wait({watch, work}, return_when=asyncio.FIRST_COMPLETED)
            next(iter(done)).result()
        finally:
            for task in (watch, work):
                task.cancel()
            await asyncio.gather(watch, work, return_exceptions=True)

    async def close(self, say_bye: bool = False) -> None:
        """Kill the jobs, remove what they left, and (when we stop for good) tell the primary, so it re-queues
        our job now rather than after the executor timeout."""
        executor = self._executor
        if executor is not None:
            await executor.kill_jobs()
        if self._storage is not None:
            # an S3 run's keys went with its workspace (cancelled or failed; a finished run's are the primary's
            # to publish or delete); local runs leave files
            if isinstance(self._storage, LocalStorage):
                await asyncio.to_thread(_discard_runs, self._storage, self._runs)
            await asyncio.to_thread(self._storage.close)  # the next session opens its own (an S3 pool, clients)
        if say_bye and self._welcomed:
            await self._send(ExecutorKind.BYE)
            with suppress(asyncio.TimeoutError, zmq.ZMQError):
                await asyncio.wait_for(self.socket.recv(), BYE_WAIT_S)  # its answer: the primary has let us go
        self._monitor.close(linger=0)
        self.socket.close(linger=0)

    async def _work(self) -> None:
        await self._send(ExecutorKind.HELLO, {"pid": os.getpid(), "hostname": sockets.gethostname()})
        welcome = await self._welcome()
        config = self._config_from(welcome)
        self._threads = config.threads_per_ffmpeg
        storage = self._storage = self._storage_from(welcome)
        self._executor = Executor(config, self._context, socket=self.socket, storage=storage)
        self._welcomed = True
        log.info("joined the primary", primary=self._settings.primary, storage=str(storage.root))
        await self._send(ExecutorKind.READY)
        heartbeat = asyncio.create_task(self._heartbeat(config.heartbeat_interval_s))
        try:
            while True:
                self._on_message(await self._receive(config.executor_timeout_s))
        finally:
            heartbeat.cancel()

    async def _welcome(self) -> dict[str, Any]:
        await self._connected.wait()
        try:
            while True:
                message = await self._receive(WELCOME_TIMEOUT_S)
                if message.kind == ExecutorKind.WELCOME:
                    return message.payload
                self._on_message(message)
        except Silent as e:
            raise Refused(f"no answer from the primary within {WELCOME_TIMEOUT_S:g} s of connecting "
                          "(is it a video cluster?)") from e

    async def _receive(self, timeout_s: float) -> ExecutorMessage:
        while True:
            try:
                frame = await asyncio.wait_for(self.socket.recv(), timeout_s)
            except TimeoutError as e:
                raise Silent(f"nothing from the primary for {timeout_s:g} s") from e
            try:
                return ExecutorMessage.decode(frame)
            except ProtocolError as e:
                log.warning("bad message from the primary", error=str(e))

    def _on_message(self, message: ExecutorMessage) -> None:
        if message.kind == ExecutorKind.REFUSED:
            raise Refused(str(message.payload.get("reason", "refused")))
        if message.kind == ExecutorKind.REJOIN:
            raise Rejoin(str(message.payload.get("reason", "the primary asks us to join again")))
        if message.kind == ExecutorKind.RUN:
            self._runs[message.run_id] = str(message.payload.get("videoId", ""))
            # threads for this host's CPUs and executor count (or the primary's --ffmpeg-threads, if it set one)
            message = dataclasses.replace(message, payload={**message.payload, "threads": self._threads})
        if self._executor is not None and message.kind in (ExecutorKind.RUN, ExecutorKind.CANCEL):
            self._executor.handle(message)

    async def _heartbeat(self, interval_s: float) -> None:
        me = psutil.Process()
        me.cpu_percent()
        while True:
            await self._send(ExecutorKind.HEARTBEAT, _usage(me))
            await asyncio.sleep(interval_s)

    def _config_from(self, welcome: dict[str, Any]) -> ClusterConfig:
        return dataclasses.replace(
            self._base, heartbeat_interval_s=float(welcome.get("heartbeatIntervalS", self._base.heartbeat_interval_s)),
            executor_timeout_s=float(welcome.get("executorTimeoutS", self._base.executor_timeout_s)),
            ffmpeg_threads=int(welcome.get("ffmpegThreads", self._base.ffmpeg_threads)))

    def _storage_from(self, welcome: dict[str, Any]) -> Storage:
        storage = welcome.get("storage") or {}
        if storage.get("kind") == "s3":  # no shared filesystem: inputs and outputs go through the bucket
            return open_storage(self._base, StorageSettings.from_dict(storage))
        if storage.get("kind") != "local":
            raise Refused(f"the primary's storage kind {storage.get('kind')!r} is not supported by this executor")
        root = self._settings.storage_dir or Path(str(storage.get("root")))
        if not root.is_dir():
            raise Refused(f"the primary's storage {root} is not on this host: mount it there (or give "
                          "--storage-dir); S3 storage will remove the need for a shared filesystem")
        return LocalStorage(root)

    async def _send(self, kind: ExecutorKind, payload: dict[str, Any] | None = None) -> None:
        await self.socket.send(ExecutorMessage(kind, "", payload or {}).encode())


def _discard_runs(storage: LocalStorage, runs: dict[str, str]) -> None:
    """Remove what these runs (run id -> video id) left under their run-scoped names. Blocking."""
    for run_id, video_id in runs.items():
        with suppress(ValueError, OSError):
            storage.discard_run(video_id, run_id)


def _usage(me: psutil.Process) -> dict[str, Any]:
    """This process and its ffmpeg, for the primary's process list and /metrics."""
    try:
        processes = [me, *me.children(recursive=True)]
        cpu = sum(p.cpu_percent() for p in processes)
        rss = sum(p.memory_info().rss for p in processes)
        return {"cpuPercent": round(cpu, 1), "rssBytes": rss, "threads": me.num_threads()}
    except psutil.Error:
        return {}


async def serve(config: ClusterConfig, settings: RemoteSettings, parent: int) -> int:
    context = zmq.asyncio.Context()
    shipper = LogShipper(context, config, settings.endpoint("logs"), settings.secure)
    configure_logging("executor", config.log_level, config.log_format, sink=shipper)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    orphaned = asyncio.create_task(watch_parent(parent, stop))
    try:
        return await _sessions(context, settings, config, stop)
    finally:
        orphaned.cancel()
        shipper.close()
        context.destroy(linger=0)


async def _sessions(context: zmq.asyncio.Context, settings: RemoteSettings, config: ClusterConfig,
                    stop: asyncio.Event) -> int:
    while not stop.is_set():
        session = Session(context, settings, config)
        task = asyncio.create_task(session.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            task.cancel()
        try:
            await task
        except Rejoin as e:
            log.warning("joining the primary again", reason=str(e))
        except Refused as e:
            await session.close()
            log.error("refused by the primary", primary=settings.primary, reason=str(e))
            print(f"executor: refused by the primary at {settings.primary}: {e}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
        except asyncio.CancelledError:
            pass
        await session.close(say_bye=stop.is_set())
    log.info("executor stopped")
    return 0


def main() -> None:
    parent, settings = start_remote_child("executor", RemoteSettings.from_env)
    sys.exit(asyncio.run(serve(child_config(), settings, parent)))


if __name__ == "__main__":
    main()
