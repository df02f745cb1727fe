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


# while the worker drains, every response closes its connection (workers/web/front_door.py), so a keep-alive
# client moves to another worker after this answer instead of finding its connection cut
CLOSE_CONNECTION = (b"connection", b"close")


async def drain(server: uvicorn.Server, state: Any, hub: Hub, linger_s: float = LINGER_S) -> None:
    state.draining = True
    for listener in server.servers:
        listener.close()  # the shared socket stays open in the other workers, which take new connections
    hub.close_all(CLOSE_SERVICE_RESTART, "service restart")
    deadline = time.monotonic() + linger_s
    while server.server_state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server.should_exit = True
