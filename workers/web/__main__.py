"""A web worker process: uvicorn + Starlette on the listening socket inherited from the primary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator

import uvicorn
import uvloop
import zmq
import zmq.asyncio

from cluster import media
from cluster.child import LISTEN_FD_ENV, LogShipper, child_config, die_with_parent, watch_parent
from cluster.config import ClusterConfig
from cluster.logs import configure_logging, get_logger
from cluster.storage import LocalStorage
from workers.web.app import WorkerState, build_app
from workers.web.auth import SessionCache
from workers.web.event_feed import pump_events
from workers.web.hub import Hub
from workers.web.rpc import ControlClient

EVENT_TOPICS = (b"job:", b"queue:")

log = get_logger()


class WorkerServer(uvicorn.Server):
    """uvicorn without its own signal handling: the worker decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(config: ClusterConfig, parent: int) -> None:
    context = zmq.asyncio.Context()
    shipper = LogShipper(context, config)
    configure_logging("web", config.log_level, config.log_format, sink=shipper)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, config.pub_hwm)
    for topic in EVENT_TOPICS:
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(config.endpoint("events"))
    rpc = ControlClient(context, config.endpoint("control"))
    hub = Hub(config.ws_queue_size)
    storage = LocalStorage(config.storage_dir)
    storage.prepare()
    state = WorkerState(config, rpc, hub, storage, media.find_ffmpeg(config.ffmpeg), SessionCache(rpc))
    listener = socket.socket(fileno=int(os.environ[LISTEN_FD_ENV]))
    server = WorkerServer(uvicorn.Config(
        build_app(state), http="httptools", ws="websockets-sansio", lifespan="off", access_log=False,
        log_config=None, timeout_graceful_shutdown=3, ws_max_size=64 * 1024,
    ))
    orphaned = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    tasks = [asyncio.create_task(c) for c in (rpc.receive_replies(), pump_events(sub, hub, rpc),
                                               watch_parent(parent, orphaned), _exit_when(orphaned, server))]
    log.info("web worker serving")
    try:
        await server.serve(sockets=[listener])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rpc.close()
        sub.close(linger=0)
        log.info("web worker stopped")
        shipper.close()
        context.destroy(linger=0)


async def _exit_when(orphaned: asyncio.Event, server: uvicorn.Server) -> None:
    await orphaned.wait()
    log.warning("primary is gone: exiting")
    server.should_exit = True


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the primary decides
    parent = die_with_parent()
    config = child_config()
    uvloop.run(serve(config, parent))


if __name__ == "__main__":
    main()
