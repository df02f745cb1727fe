"""The web worker's side of the control socket: concurrent calls to the primary.

An answer to no request (id 0) with status 403 says the primary refuses this process's key (a remote web tier
whose key was revoked): ``on_refused`` hears it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from cluster.protocol import ProtocolError, Reply, Request
from cluster.remote_web import REFUSAL_ID, REFUSED_STATUS

CALL_TIMEOUT_S = 10.0


class RpcError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    def __init__(self, context: zmq.asyncio.Context, endpoint: str,
                 secure: Callable[[zmq.Socket], None] | None = None, monitor_events: int = 0) -> None:
        """``secure``: a remote web tier's CURVE keys; ``monitor_events``: a monitor socket for these events,
        made before the connection so that none is missed."""
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if secure is not None:
            secure(self._socket)
        self.monitor = self._socket.get_monitor_socket(monitor_events) if monitor_events else None
        self._socket.connect(endpoint)
        self.on_refused: Callable[[str], None] = lambda reason: None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}

    async def call(self, op: str, **args: Any) -> Any:
        request = Request(next(self._ids), op, args)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            await self._socket.send(request.encode())
            reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        except TimeoutError as e:
            raise RpcError(503, "the primary did not answer") from e
        finally:
            self._pending.pop(request.id, None)
        if not reply.ok:
            raise RpcError(reply.status, reply.error or "error")
        return reply.result

    async def receive_replies(self) -> None:
        while True:
            frame = await self._socket.recv()
            try:
                reply = Reply.decode(frame)
            except ProtocolError:
                continue
            if reply.id == REFUSAL_ID and reply.status == REFUSED_STATUS:
                self.on_refused(reply.error or "refused")
                continue
            future = self._pending.get(reply.id)
            if future is not None and not future.done():
                future.set_result(reply)

    def close(self) -> None:
        self._socket.close(linger=0)
