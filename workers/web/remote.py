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
import signal
import socket as sockets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import uvicorn
import uvloop
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from cluster.child import (
    CERT_ENV,
    EXIT_BOOT_FAILURE,
    EXIT_REFUSED,
    PRIMARY_ENV,
    LogShipper,
    child_config,
    die_with_parent,
)
from cluster.config import REMOTE_ENDPOINTS, ClusterConfig
from cluster.curve import CertError, ClientCert, make_client, tcp_port
from cluster.logs import configure_logging, get_logger
from cluster.remote_web import HELLO_OP, apply_settings
from workers.web.__main__ import BootFailure, PrimaryLink, run_worker
from workers.web.rpc import ControlClient, RpcError

log = get_logger()

HELLO_TIMEOUT_S = 10.0  # connected, but no answer to hello this long after: refused (well within 15 s)
FAILED_HANDSHAKES_TO_REFUSE = 3  # a certificate for another primary fails every CURVE handshake
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 2000
HANDSHAKE_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Refused(Exception):
    """The primary will not have this web tier: it says why, and it exits without respawning."""


@dataclass(frozen=True)
class RemoteSettings:
    primary: str  # tcp://HOST:PORT, the PORT of the primary's --remote-bind
    cert: ClientCert

    @classmethod
    def from_env(cls) -> RemoteSettings:
        return cls(os.environ[PRIMARY_ENV], ClientCert.load(Path(os.environ[CERT_ENV])))

    def endpoint(self, name: str) -> str:
        host, port = tcp_port(self.primary)
        return f"tcp://{host}:{port + REMOTE_ENDPOINTS.index(name)}"

    def secure(self, socket: zmq.Socket) -> None:
        socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        socket.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        make_client(socket, self.cert)

    def secure_control(self, socket: zmq.Socket) -> None:
        """One identity for the process's life: after a reconnect (a flapping link) the primary still knows
        it as the same worker (its control socket takes the identity over)."""
        socket.setsockopt(zmq.IDENTITY, f"web-{sockets.gethostname()[:64]}-{os.getpid()}-"
                                        f"{secrets.token_hex(4)}".encode())
        self.secure(socket)

    def link(self) -> PrimaryLink:
        me = psutil.Process()
        me.cpu_percent()
        return PrimaryLink(self.endpoint("events"), self.endpoint("control"), self.endpoint("logs"), self.secure,
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
        failures = 0
        while not self.refused.is_set():
            event = await recv_monitor_message(self._monitor)
            kind = event["event"]
            if kind == zmq.EVENT_CONNECTED:
                self.connected.set()
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                failures = 0
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refuse(f"the primary refuses the key {self._cert_name!r}: unknown or revoked "
                            f"(status {event['value']})")
            else:
                failures += 1
                if failures >= FAILED_HANDSHAKES_TO_REFUSE:
                    self.refuse("the CURVE handshake with the primary fails: the certificate is for another "
                                "primary's key, or the address is not a video cluster's --remote-bind port")

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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the host decides
    parent = die_with_parent()
    try:
        settings = RemoteSettings.from_env()
    except CertError as e:
        print(f"web: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    try:
        sys.exit(uvloop.run(serve(child_config(), settings, parent)))
    except BootFailure as e:
        log.error("web worker failed to boot", error=str(e.__cause__ or e))
        sys.exit(EXIT_BOOT_FAILURE)


if __name__ == "__main__":
    main()
