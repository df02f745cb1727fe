"""Control RPC: the web workers' requests to the primary, over a ROUTER socket.

Requests that arrive together are answered together: the plain handlers of a burst run inside one
``batch`` (the engine's group commit), and their replies go out once it is stored, so a reply never
announces what a crash could still lose. A handler may also be a coroutine (a long read run off the
loop); its reply goes out when it finishes, in any order (each reply carries its request's id).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import zmq
import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import ProtocolError, Reply, Request

log = get_logger()

Handler = Callable[[dict[str, Any]], Any]
MAX_BURST = 64  # messages taken from a socket at once: a burst of submissions holds the loop ~10 ms


class RequestError(Exception):
    """Answered to the caller with an HTTP-like status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def receive_burst(socket: zmq.asyncio.Socket, copy: bool = True) -> list[list[Any]]:
    """One message (waiting for it), then every message already waiting, up to MAX_BURST.
    ``copy=False``: zmq.Frame objects, which carry their connection's properties (ZAP's User-Id)."""
    burst = [await socket.recv_multipart(copy=copy)]
    while len(burst) < MAX_BURST and socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        burst.append(await socket.recv_multipart(copy=copy))
    return burst


class ControlServer:
    def __init__(self, socket: zmq.asyncio.Socket, *handler_maps: Mapping[str, Handler],
                 batch: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self._socket = socket
        self._batch = batch
        self._handlers: dict[str, Handler] = {}
        self._running: set[asyncio.Task[None]] = set()
        for handlers in handler_maps:
            self._handlers.update(handlers)

    async def serve(self) -> None:
        while True:
            replies = []
            burst = await self.receive()
            with self._batch():
                for identity, frame in burst:
                    reply = self.answer_frame(identity, frame)
                    if reply is not None:
                        replies.append([identity, reply])
            for reply in replies:  # after the batch is stored
                self._socket.send_multipart(reply)

    async def receive(self) -> list[list[Any]]:
        """A burst of [identity, frame] messages (primary/remote_web.py checks each one's key)."""
        return await receive_burst(self._socket)

    def answer_frame(self, identity: bytes, frame: Any) -> bytes | None:
        """The encoded reply to a frame of one request or an array of them: the answers ready now (an array
        for an array); those of coroutine handlers are sent by themselves when they finish."""
        try:
            requests, many = Request.decode_many(self.frame_bytes(frame))
        except ProtocolError as e:
            return Reply(0, error=str(e), status=400).encode()
        ready = []
        for request in requests:
            answer = self.answer_request(identity, frame, request)
            if isinstance(answer, Reply):
                ready.append(answer)
            else:
                self._spawn(identity, *answer)
        if not ready:
            return None
        return Reply.encode_many(ready) if many else ready[0].encode()

    def frame_bytes(self, frame: Any) -> bytes:
        return frame  # type: ignore[no-any-return]

    def answer_request(self, _identity: bytes, _frame: Any, request: Request) -> Reply | tuple[Request, Any]:
        return self.run(request)

    def run(self, request: Request, handler: Handler | None = None) -> Reply | tuple[Request, Any]:
        """Answer a decoded request, with its registered handler unless another is given."""
        handler = handler or self._handlers.get(request.op)
        if handler is None:
            return Reply(request.id, error=f"unknown operation {request.op!r}", status=400)
        try:
            result = handler(request.args)
        except RequestError as e:
            return Reply(request.id, error=str(e), status=e.status)
        except Exception:
            log.exception("control request failed", op=request.op)
            return Reply(request.id, error="internal error", status=500)  # the details are in the log only
        if inspect.isawaitable(result):
            return request, result
        return Reply(request.id, result=result)

    def _spawn(self, identity: bytes, request: Request, pending: Any) -> None:
        task = asyncio.create_task(self._finish(identity, request, pending))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _finish(self, identity: bytes, request: Request, pending: Any) -> None:
        try:
            reply = Reply(request.id, result=await pending)
        except RequestError as e:
            reply = Reply(request.id, error=str(e), status=e.status)
        except Exception:
            log.exception("control request failed", op=request.op)
            reply = Reply(request.id, error="internal error", status=500)  # the details are in the log only
        self._socket.send_multipart([identity, reply.encode()])

    def close(self) -> None:
        for task in self._running:
            task.cancel()
        self._socket.close(linger=0)

