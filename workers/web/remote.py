"""A remote web worker process (``run_cluster.py web``): joins a primary over TCP with CurveZMQ, takes the
cluster's settings from the primary's answer to hello, then serves like a local web worker
(workers/web/__main__.py) on the listening socket its host bound.

A refused key (unknown, revoked, a certificate for another primary) or a primary whose media is on its own
disk ends the process with EXIT_REFUSED and a reason; a key revoked while it serves stops it at once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket as sockets
import sys
from dataclasses import dataclass
from typing import Any

import psutil
import uvicorn
import uvloop
import zmq
import zmq.asyncio

from cluster.child import EXIT_BOOT_FAILURE, EXIT_REFUSED, LogShipper, child_config
from cluster.config import ClusterConfig
from cluster.logs import configure_logging, get_logger
from cluster.remote_web import HELLO_OP, apply_settings
from workers.remote_link import HANDSHAKE_EVENTS, Refused, RemoteLink, start_remote_child, watch_handshakes
from workers.web.__main__ import BootFailure, PrimaryLink, run_worker
from workers.web.rpc import ControlClient, RpcError

log = get_logger()

HELLO_TIMEOUT_S = 10.0  # connected, but no answer to hello this long after: refused (well within 15 s)


@dataclass(frozen=True)
class RemoteSettings(RemoteLink):
    def secure_control(self, socket: zmq.Socket) -> None:
        """One identity for the process's life: after a reconnect (a flapping link) the primary still knows
        it as the same worker (its control socket takes the identity over)."""
        socket.setsockopt(zmq.IDENTITY, f"web-{sockets.gethostname()[:64]}-{os.getpid()}-"
                                        f"{secrets.token_hex(4)}".encode())
        self.secure(socket)

    def link(self) -> PrimaryLink:
        me = psutil.Process()
        me.cpu_percent()
        return PrimaryLink(self.endpoint("events"), self.endpoint("control"), self.secure,
                           describe=lambda: {"host": _describe(me)}, recycles_itself=True)


class Refusal:
    """Hears every way the primary says no: a failed CURVE handshake on the control socket, or its notice."""

    def __init__(self, rpc: ControlClient, cert_name: str) -> None:
        self._cert_name = cert_name
        assert rpc.monitor is not None, "made with monitor_events=HANDSHAKE_EVENTS"
        self._monitor = rpc.monitor
        self.connected = asyncio.Event()
        self.refused = asyncio.Event()
        self.reason = ""
        rpc.on_refused = self.refuse

    def refuse(self, reason: str) -> None:
        if not self.refused.is_set():
            self.reason = reason
            self.refused.set()

    async def watch(self) -> None:
        try:
            await watch_handshakes(self._monitor, self._cert_name, self.connected)
        except Refused as e:
            self.refuse(str(e))

    async def stop_serving(self, server: uvicorn.Server) -> None:
        """Cut off while serving: stop at once, without draining (the primary no longer answers us)."""
        await self.refused.wait()
        log.error("refused by the primary: stopping", reason=self.reason)
        server.should_exit = True
        server.force_exit = True

    def close(self) -> None:
        self._monitor.close(linger=0)


async def hello(rpc: ControlClient, refusal: Refusal, base: ClusterConfig, describe: dict[str, Any]) -> ClusterConfig:
    """Join: the cluster's settings from the primary, or Refused."""
    await refusal.connected.wait()  # a primary that is not up yet is waited for; one that does not answer is not
    call = asyncio.create_task(rpc.call(HELLO_OP, pid=os.getpid(), **describe))
    refused = asyncio.create_task(refusal.refused.wait())
    try:
        done, _ = await asyncio.wait({call, refused}, timeout=HELLO_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (call, refused):
            task.cancel()
    if refused in done:
        raise Refused(refusal.reason)
    if call not in done:
        raise Refused(f"no answer from the primary within {HELLO_TIMEOUT_S:g} s of connecting (is it a video "
                      "cluster started with --remote-bind?)")
    try:
        return apply_settings(base, call.result())
    except RpcError as e:
        raise Refused(str(e)) from e
    except (ValueError, TypeError) as e:
        raise Refused(f"the primary's settings cannot be used: {e}") from e


async def serve(base: ClusterConfig, settings: RemoteSettings, parent: int) -> int:
    context = zmq.asyncio.Context()
    shipper = LogShipper(context, base, settings.endpoint("logs"), settings.secure)
    configure_logging("web", base.log_level, base.log_format, sink=shipper)
    rpc = ControlClient(context, settings.endpoint("control"), secure=settings.secure_control,
                        monitor_events=HANDSHAKE_EVENTS)
    refusal = Refusal(rpc, settings.cert.name)
    watching = asyncio.create_task(refusal.watch())
    receiving = asyncio.create_task(rpc.receive_replies())
    link = settings.link()
    try:
        config = await hello(rpc, refusal, base, link.describe())
    except Refused as e:
        refusal.refuse(str(e))
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
    if refusal.refused.is_set():
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        refusal.close()
        rpc.close()
        shipper.close()
        context.destroy(linger=0)
    else:
        log.info("joined the primary", primary=settings.primary, storage=config.storage)
        try:  # run_worker closes the sockets and the context
            await run_worker(config, parent, context, link, rpc, shipper, watchers=[refusal.stop_serving])
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    if refusal.refused.is_set():
        print(f"web: refused by the primary at {settings.primary}: {refusal.reason}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    return 0


def _describe(me: psutil.Process) -> dict[str, Any]:
    """This worker, for the primary's process list and /metrics: its host, its pid there, its usage."""
    host: dict[str, Any] = {"hostname": sockets.gethostname(), "pid": os.getpid()}
    try:
        with me.oneshot():
            host["usage"] = {"cpuPercent": round(me.cpu_percent(), 1), "rssBytes": me.memory_info().rss,
                             "threads": me.num_threads()}
    except psutil.Error:
        pass
    return host


def main() -> None:
    parent, settings = start_remote_child("web", RemoteSettings.from_env)
    try:
        sys.exit(uvloop.run(serve(child_config(), settings, parent)))
    except BootFailure as e:
        log.error("web worker failed to boot", error=str(e.__cause__ or e))
        sys.exit(EXIT_BOOT_FAILURE)


if __name__ == "__main__":
    main()
