"""Remote web tiers (``run_cluster.py web``): their control socket on TCP, and what the primary knows of them.

Every message on the TCP control socket carries the CURVE key its connection proved (ZAP's User-Id); a key
revoked since is refused on a connection made before, and each worker of that key is told at once (an answer
with id 0 and status 403), so that it stops serving. A remote worker is known by its connection, not its pid
(a pid of another host may be one of ours): each gets an id of its own, negative so that it is never taken
for a local pid, and that id stands for its pid in every request it makes (WebSocket counts, say).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import zmq
import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import Reply, Request
from cluster.remote_web import HELLO_OP, REFUSAL_ID, REFUSED_STATUS
from primary.control import ControlServer, Handler, RequestError, receive_burst

log = get_logger()

WATCH_INTERVAL_S = 0.5
REVOKED = "the key of this web tier is revoked"
LOCAL_STORAGE = ("the primary keeps media on its own disk: a remote web tier needs shared storage (start the "
                 "primary with --storage s3://BUCKET/PREFIX)")


@dataclass
class RemoteWorker:
    id: int  # negative: never a local pid
    identity: bytes
    key: str
    address: str
    last_seen: float = field(default_factory=time.monotonic)
    pid: int = 0  # on its own host
    hostname: str = ""
    serving: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"role": "web", "pid": self.pid, "serving": self.serving, "remote": True, "hostname": self.hostname,
                "address": self.address, **self.usage}


class RemoteWebWorkers:
    """The remote web workers that talk to us; one silent for ``timeout_s`` is forgotten (its host
    supervises it: we cannot kill a process of another host)."""

    def __init__(self, settings: dict[str, Any] | None, timeout_s: float,
                 on_forget: Callable[[int], None] = lambda worker_id: None) -> None:
        self._settings = settings  # None: local storage, remote web tiers are refused
        self._timeout_s = timeout_s
        self._on_forget = on_forget
        self._ids = itertools.count(1)
        self.workers: dict[bytes, RemoteWorker] = {}

    def handlers(self) -> dict[str, Callable[[RemoteWorker, dict[str, Any]], Any]]:
        return {HELLO_OP: self._hello, "worker_ready": self._ready, "worker_heartbeat": self._heartbeat,
                "worker_recycle": lambda _worker, _args: True}  # a remote worker recycles itself

    def seen(self, identity: bytes, key: str, address: str) -> RemoteWorker:
        worker = self.workers.get(identity)
        if worker is None or worker.key != key:
            worker = self.workers[identity] = RemoteWorker(-next(self._ids), identity, key, address)
        worker.last_seen = time.monotonic()
        return worker

    def _hello(self, worker: RemoteWorker, args: dict[str, Any]) -> dict[str, Any]:
        self._describe(worker, args)
        if self._settings is None:
            raise RequestError(409, LOCAL_STORAGE)
        log.info("remote web worker joined", hostname=worker.hostname, address=worker.address, pid=worker.pid)
        return self._settings

    def _ready(self, worker: RemoteWorker, args: dict[str, Any]) -> bool:
        self._describe(worker, args)
        worker.serving = True
        return True

    def _heartbeat(self, worker: RemoteWorker, args: dict[str, Any]) -> bool:
        self._describe(worker, args)
        worker.serving = True  # after a restart of ours, its heartbeats tell us it serves
        worker.stats = dict(args.get("stats") or {})
        return True

    @staticmethod
    def _describe(worker: RemoteWorker, args: dict[str, Any]) -> None:
        host = args.get("host") if isinstance(args.get("host"), dict) else {}
        worker.hostname = str(host.get("hostname", worker.hostname))[:255]
        pid = host.get("pid", worker.pid)
        worker.pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else worker.pid
        usage = host.get("usage")
        if isinstance(usage, dict):
            worker.usage = {k: usage[k] for k in ("cpuPercent", "rssBytes", "threads")
                            if isinstance(usage.get(k), (int, float))}

    def processes(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers.values() if w.serving]

    @property
    def stats(self) -> dict[int, dict[str, Any]]:
        return {w.id: w.stats for w in self.workers.values() if w.stats}

    def revoke(self, keys: set[str]) -> list[bytes]:
        """Forget the workers of these keys; their identities, to be told."""
        gone = [w for w in self.workers.values() if w.key in keys]
        for worker in gone:
            self._forget(worker, "its key is revoked")
        return [w.identity for w in gone]

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            deadline = time.monotonic() - self._timeout_s
            for worker in [w for w in self.workers.values() if w.last_seen < deadline]:
                self._forget(worker, "silent")

    def _forget(self, worker: RemoteWorker, reason: str) -> None:
        if self.workers.pop(worker.identity, None) is not None:
            log.warning("remote web worker removed", hostname=worker.hostname, address=worker.address,
                        pid=worker.pid, reason=reason)
            self._on_forget(worker.id)


class RemoteControlServer(ControlServer):
    """The control socket of remote web tiers: the local handlers, behind a key check on every message."""

    def __init__(self, socket: zmq.asyncio.Socket, workers: RemoteWebWorkers, authorised: Callable[[str], bool],
                 *handler_maps: Mapping[str, Handler],
                 batch: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        super().__init__(socket, *handler_maps, batch=batch)
        self._workers = workers
        self._authorised = authorised
        self._worker_handlers = workers.handlers()

    async def receive(self) -> list[list[Any]]:
        return [[identity.bytes, frame] for identity, frame in await receive_burst(self._socket, copy=False)]

    def frame_bytes(self, frame: Any) -> bytes:
        return frame.bytes  # type: ignore[no-any-return]

    def answer_request(self, identity: bytes, frame: Any, request: Request) -> Reply | tuple[Request, Any]:
        key = _user_id(frame)
        if not self._authorised(key):
            self.tell_refused(identity)
            return Reply(request.id, error=REVOKED, status=REFUSED_STATUS)
        worker = self._workers.seen(identity, key, _peer_address(frame))
        if "pid" in request.args:  # its pid is one of another host: it is known here by its own id
            request = replace(request, args={**request.args, "pid": worker.id})
        special = self._worker_handlers.get(request.op)
        if special is not None:
            return self.run(request, lambda args: special(worker, args))
        return self.run(request)

    def revoke(self, keys: set[str]) -> None:
        for identity in self._workers.revoke(keys):
            self.tell_refused(identity)

    def tell_refused(self, identity: bytes) -> None:
        self._socket.send_multipart([identity, Reply(REFUSAL_ID, error=REVOKED, status=REFUSED_STATUS).encode()])


def _user_id(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("User-Id"))
    except zmq.ZMQError:
        return ""  # no ZAP on this connection: never authorised


def _peer_address(frame: zmq.Frame) -> str:
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return ""
