"""Control RPC: the web workers' requests to the primary, over a ROUTER socket."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import ProtocolError, Reply, Request

log = get_logger()

Handler = Callable[[dict[str, Any]], Any]


class RequestError(Exception):
    """Answered to the caller with an HTTP-like status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    def __init__(self, socket: zmq.asyncio.Socket, *handler_maps: Mapping[str, Handler]) -> None:
        self._socket = socket
        self._handlers: dict[str, Handler] = {}
        for handlers in handler_maps:
            self._handlers.update(handlers)

    async def serve(self) -> None:
        while True:
            identity, frame = await self._socket.recv_multipart()
            self._socket.send_multipart([identity, self.answer(frame).encode()])

    def answer(self, frame: bytes) -> Reply:
        try:
            request = Request.decode(frame)
        except ProtocolError as e:
            return Reply(0, error=str(e), status=400)
        handler = self._handlers.get(request.op)
        if handler is None:
            return Reply(request.id, error=f"unknown operation {request.op!r}", status=400)
        try:
            return Reply(request.id, result=handler(request.args))
        except RequestError as e:
            return Reply(request.id, error=str(e), status=e.status)
        except Exception:
            log.exception("control request failed", op=request.op)
            return Reply(request.id, error="internal error", status=500)  # the details are in the log only

    def close(self) -> None:
        self._socket.close(linger=0)
