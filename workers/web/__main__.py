"""A web worker process: uvicorn + Starlette on the listening socket inherited from the primary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import uvicorn
import uvloop
import zmq
import zmq.asyncio

from cluster import media
from cluster.child import (
    EXIT_BOOT_FAILURE,
    LISTEN_FD_ENV,
    LogShipper,
    child_config,
    die_with_parent,
    lower_priority,
    watch_parent,
)
from cluster.config import ClusterConfig
from cluster.heap import map_large_blocks
from cluster.logs import configure_logging, get_logger
from cluster.protocol import SESSION_TOPIC
from cluster.storage import open_storage
from workers.web.app import WorkerState, build_app
from workers.web.auth import SessionCache
from workers.web.draining import drain
from workers.web.event_feed import EventFeed, SessionTripwire
from workers.web.hub import Hub
from workers.web.rpc import ControlClient, RpcError
from workers.web.session_events import event_sink
from workers.web.slow_clients import http_protocol
from workers.web.ws_frames import FrameWriterProtocol

UPLOAD_BLOCK_MMAP = 1 << 20  # an upload's part buffers (8 MiB) are mapped, and unmapped once sent
EVENT_TOPICS = (b"job:", b"queue:", SESSION_TOPIC.encode())

log = get_logger()


class WorkerServer(uvicorn.Server):
    """uvicorn without its own signal handling (the worker decides when to stop), telling when it serves."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.serving.set()


@dataclass(frozen=True)
class PrimaryLink:
    """How this worker reaches the primary: its ipc endpoints, or (a remote web tier, workers/web/remote.py)
    TCP endpoints with CURVE keys, this host's figures in every report, and recycling by draining itself."""

    events: str
    control: str
    secure: Callable[[zmq.Socket], None] | None = None
    describe: Callable[[], dict[str, Any]] = dict
    recycles_itself: bool = False

    @classmethod
    def local(cls, config: ClusterConfig) -> PrimaryLink:
        return cls(config.endpoint("events"), config.endpoint("control"))


async def report_to_primary(server: WorkerServer, state: WorkerState, config: ClusterConfig, link: PrimaryLink,
                            start_drain: Callable[[], None]) -> None:
    """Say when this worker serves, then heart-beat with its figures: silence gets it replaced.
    Past its request or memory budget it asks to be recycled, once (or drains, for its host to replace it)."""
    await server.serving.wait()
    await state.rpc.call("worker_ready", pid=os.getpid(), **link.describe())
    budget = Budget(config)
    recycling = False
    while True:
        await asyncio.sleep(config.heartbeat_interval_s)
        stats = state.stats()
        with contextlib.suppress(RpcError):
            await state.rpc.call("worker_heartbeat", pid=os.getpid(), stats=stats, **link.describe())
            reason = budget.exceeded(stats["requests"])
            if reason and not recycling:
                recycling = True
                log.info("asking to be recycled", reason=reason)
                if link.recycles_itself:
                    start_drain()
                else:
                    await state.rpc.call("worker_recycle", pid=os.getpid(), reason=reason)


class Budget:
    """How much a worker may serve before it is recycled; jitter keeps workers from recycling together."""

    def __init__(self, config: ClusterConfig) -> None:
        jitter = random.randint(0, config.max_requests_jitter) if config.max_requests_jitter else 0
        self.max_requests = config.max_requests + jitter if config.max_requests else 0
        self.max_rss = config.max_worker_memory_mb * 1024 * 1024
        self._process = psutil.Process()

    def exceeded(self, requests: int) -> str | None:
        if self.max_requests and requests >= self.max_requests:
            return f"served {requests} requests"
        if self.max_rss and self._process.memory_info().rss > self.max_rss:
            return "memory limit"
        return None


async def serve(config: ClusterConfig, parent: int) -> None:
    context = zmq.asyncio.Context()
    link = PrimaryLink.local(config)
    shipper = LogShipper(context, config)
    configure_logging("web", config.log_level, config.log_format, sink=shipper)
    await run_worker(config, parent, context, link, ControlClient(context, link.control), shipper)


async def run_worker(config: ClusterConfig, parent: int, context: zmq.asyncio.Context, link: PrimaryLink,
                     rpc: ControlClient, shipper: LogShipper,
                     watchers: Sequence[Callable[[uvicorn.Server], Awaitable[None]]] = ()) -> None:
    """Serve until told to stop; the context, the control client and the log shipper are closed here."""
    sub = _subscriber(context, config, link, EVENT_TOPICS)
    # on the same ZeroMQ context, but a plain socket: it is only ever read without waiting
    tripwire = SessionTripwire(_subscriber(zmq.Context.shadow(context.underlying), config, link,
                                           (SESSION_TOPIC.encode(),)))
    hub = Hub(config.ws_queue_size)
    feed = EventFeed(sub, rpc, tripwire)
    sessions = SessionCache(rpc, feed.up_to_date)
    try:
        storage = open_storage(config)
        storage.prepare()
        state = WorkerState(config, rpc, hub, storage, media.find_ffmpeg(config.ffmpeg), sessions)
        listener = socket.socket(fileno=int(os.environ[LISTEN_FD_ENV]))
        server = WorkerServer(uvicorn.Config(
            build_app(state), http=http_protocol(config.header_timeout_s), ws=FrameWriterProtocol, lifespan="off", access_log=False,
            proxy_headers=False,  # workers/web/client_ip.py decides whose X-Forwarded-* to believe
            log_config=None, timeout_graceful_shutdown=3, ws_max_size=64 * 1024,
            ws_per_message_deflate=False,  # events are ~200-byte JSON: compressing each costs more than it saves
        ))
    except (OSError, ValueError, RuntimeError, media.MediaError) as e:
        rpc.close()
        sub.close(linger=0)
        tripwire.close()
        shipper.close()
        context.destroy(linger=0)
        raise BootFailure from e
    orphaned = asyncio.Event()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[None]] = []
    start_drain = lambda: draining or draining.append(asyncio.create_task(drain(server, state, hub)))
    loop.add_signal_handler(signal.SIGTERM, start_drain)
    # not through the loop: the handler must run before the loop reads the request that came meanwhile
    signal.signal(signal.SIGCONT, lambda _signum, _frame: sessions.distrust_all())
    tasks = [asyncio.create_task(c) for c in (rpc.receive_replies(), feed.pump(event_sink(hub, sessions)),
                                               watch_parent(parent, orphaned), _exit_when(orphaned, server),
                                               report_to_primary(server, state, config, link, start_drain),
                                               *(watch(server) for watch in watchers))]
    log.info("web worker serving")
    try:
        await server.serve(sockets=[listener])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rpc.close()
        sub.close(linger=0)
        tripwire.close()
        log.info("web worker stopped")
        shipper.close()
        context.destroy(linger=0)


def _subscriber(context: zmq.Context, config: ClusterConfig, link: PrimaryLink, topics: Sequence[bytes]) -> zmq.Socket:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, config.pub_hwm)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    if link.secure:
        link.secure(sub)
    sub.connect(link.events)
    return sub


class BootFailure(Exception):
    """The worker could not start serving; the supervisor backs off instead of respawning at once."""


async def _exit_when(orphaned: asyncio.Event, server: uvicorn.Server) -> None:
    await orphaned.wait()
    log.warning("primary is gone: exiting")
    server.should_exit = True


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the primary decides
    parent = die_with_parent()
    config = child_config()
    # the primary answers every web worker's calls: under a full CPU it goes first (bench/README.md,
    # store_bench: with every core busy its loop lag halves and submissions do not drop)
    lower_priority(config.web_nice)
    map_large_blocks(UPLOAD_BLOCK_MMAP)
    try:
        uvloop.run(serve(config, parent))
    except BootFailure as e:
        log.error("web worker failed to boot", error=str(e.__cause__ or e))
        sys.exit(EXIT_BOOT_FAILURE)


if __name__ == "__main__":
    main()
