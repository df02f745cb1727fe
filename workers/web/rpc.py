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

from cluster.logs import get_logger
from cluster.protocol import ProtocolError, Reply, Request
from cluster.remote_web import REFUSAL_ID, REFUSED_STATUS

log = get_logger()

CALL_TIMEOUT_S = 10.0


class RpcError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    def __init__(self, context: zmq.asyncio.Context, endpoint: str,
                 secure: Callable[[zmq.Socket], None] | None = None, monitor_events: int = 0,
                 timeout_s: float = CALL_TIMEOUT_S) -> None:
        """``secure``: a remote web tier's CURVE keys; ``monitor_events``: a monitor socket for these events,
        made before the connection so that none is missed; ``timeout_s``: a call unanswered that long fails
        with 503 (checked about every ``timeout_s / 10``)."""
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if secure is not None:
            secure(self._socket)
        self.monitor = self._socket.get_monitor_socket(monitor_events) if monitor_events else None
        self._socket.connect(endpoint)
        self.on_refused: Callable[[str], None] = lambda reason: None
        self._ids = itertools.count(1)
        # call id -> (its answer, its deadline): in call order, so in deadline order too
        self._pending: dict[int, tuple[asyncio.Future[Reply], float]] = {}
        self._outgoing: list[Request] = []  # calls made in this turn of the loop: sent as one frame at its end
        self._sends: set[asyncio.Future[None]] = set()
        self._timeout_s = timeout_s
        self._expiry: asyncio.TimerHandle | None = None

    async def call(self, op: str, **args: Any) -> Any:
        request = Request(next(self._ids), op, args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[request.id] = (future, loop.time() + self._timeout_s)
        if self._expiry is None:
            self._expiry = loop.call_later(self._timeout_s / 10, self._expire)
        if not self._outgoing:
            loop.call_soon(self._send_outgoing)
        self._outgoing.append(request)
        try:
            reply = await future  # one timer for every call (``_expire``), not one each
        finally:
            self._pending.pop(request.id, None)
        if not reply.ok:
            raise RpcError(reply.status, reply.error or "error")
        return reply.result

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for future, deadline in self._pending.values():
            if deadline > now:
                break
            if not future.done():
                future.set_exception(RpcError(503, "the primary did not answer"))
        self._expiry = loop.call_later(self._timeout_s / 10, self._expire) if self._pending else None

    def _send_outgoing(self) -> None:
        """One frame for every call of the turn: a burst of requests costs the primary one message."""
        requests, self._outgoing = self._outgoing, []
        try:
            sending = self._socket.send(Request.encode_many(requests))
        except zmq.ZMQError as e:  # the socket is closed: the worker is stopping
            for request in requests:
                future = self._waiting(request.id)
                if future is not None:
                    future.set_exception(RpcError(503, f"cannot reach the primary: {e}"))
            return
        # the socket's queue may be full: the frame goes when there is room (or the calls time out)
        self._sends.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sends.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            log.warning("a request to the primary was not sent", error=str(sending.exception()))

    async def receive_replies(self) -> None:
        while True:
            frame = await self._socket.recv()
            try:
                replies = Reply.decode_many(frame)
            except ProtocolError:
                continue
            for reply in replies:
                self._answered(reply)

    def _answered(self, reply: Reply) -> None:
        if reply.id == REFUSAL_ID and reply.status == REFUSED_STATUS:
            self.on_refused(reply.error or "refused")
            return
        future = self._waiting(reply.id)
        if future is not None:
            future.set_result(reply)

    def _waiting(self, call_id: int) -> asyncio.Future[Reply] | None:
        """The answer still awaited for that call, if any."""
        future, _deadline = self._pending.get(call_id, (None, 0.0))
        return future if future is not None and not future.done() else None

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._socket.close(linger=0)
