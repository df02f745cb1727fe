"""Draining a web worker without failing a request: stop accepting, answer what still comes on open
connections with ``Connection: close``, tell WebSocket clients to reconnect, then stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn

from workers.web.hub import Hub

CLOSE_SERVICE_RESTART = 1012
LINGER_S = 2.0


class CloseWhenDraining:
    """ASGI middleware: while the worker drains, every response closes its connection, so a keep-alive
    client moves to another worker after this answer instead of finding its connection cut."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_close(message: Any) -> None:
            if message["type"] == "http.response.start" and self.state.draining:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_with_close)


async def drain(server: uvicorn.Server, state: Any, hub: Hub, linger_s: float = LINGER_S) -> None:
    state.draining = True
    for listener in server.servers:
        listener.close()  # the shared socket stays open in the other workers, which take new connections
    hub.close_all(CLOSE_SERVICE_RESTART, "service restart")
    deadline = time.monotonic() + linger_s
    while server.server_state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server.should_exit = True
