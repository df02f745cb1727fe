"""The /ws endpoint: room subscriptions from the client, events from the hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from workers.web.event_feed import replay
from workers.web.hub import WsClient


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state.worker
    hub = state.hub
    client = hub.connect(websocket)  # before accept: an event published once the client is connected reaches it
    sender: asyncio.Task[None] | None = None
    try:
        await websocket.accept()
        client.offer(json.dumps({"type": "welcome", "worker": os.getpid()}))
        sender = asyncio.create_task(client.send_forever())
        while True:
            await _handle(client, await websocket.receive_text(), state)
    except (WebSocketDisconnect, RuntimeError):
        pass  # closed by the client, or by the hub for being too slow
    finally:
        hub.disconnect(client)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender


async def _handle(client: WsClient, text: str, state: Any) -> None:
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        await _reply(client, {"type": "error", "error": "messages must be JSON"})
        return
    kind = message.get("type") if isinstance(message, dict) else None
    video_id = message.get("videoId") if isinstance(message, dict) else None
    if kind in ("subscribe-video", "unsubscribe-video"):
        if not isinstance(video_id, str) or not video_id:
            await _reply(client, {"type": "error", "error": "videoId is required"})
            return
        if kind == "subscribe-video":
            client.rooms.add(video_id)
            await _reply(client, {"type": "subscribed", "videoId": video_id})
        else:
            client.rooms.discard(video_id)
            await _reply(client, {"type": "unsubscribed", "videoId": video_id})
        return
    if kind == "resume":
        await _resume(client, message.get("since"), state)
        return
    await _reply(client, {"type": "error", "error": f"unknown message type {kind!r}"})


async def _resume(client: WsClient, since: Any, state: Any) -> None:
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        await _reply(client, {"type": "error", "error": "since must be a seq number (0 or more)"})
        return
    replayed = await replay(client, state.rpc, since)
    if replayed < 0:
        state.hub.drop(client)
        return
    await _reply(client, {"type": "resumed", "since": since, "replayed": replayed, "lastSeq": client.last_seq})


async def _reply(client: WsClient, message: dict[str, Any]) -> None:
    client.offer(json.dumps(message))
