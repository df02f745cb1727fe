"""The /ws endpoint: room subscriptions from the client, events from the hub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from workers.web import request_body
from workers.web.auth import current_user
from workers.web.csrf import websocket_problem
from workers.web.errors import ApiError
from workers.web.event_feed import replay
from workers.web.hub import Hub, WsClient
from workers.web.rpc import RpcError

HOLD_FOR_RESUME_S = 0.5
MAX_SEQ = 2**63 - 1  # SQLite's largest integer: a larger since would fail in the store


async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state.worker
    hub = state.hub
    if problem := websocket_problem(websocket):  # before anything else: a page elsewhere has the cookie too
        await _deny(websocket, 403, problem)
        return
    try:
        user = await current_user(websocket)
    except ApiError as e:
        await _deny(websocket, e.status, str(e))
        return
    limit = state.config.max_ws_per_worker
    if limit and len(hub.clients) >= limit:
        await _deny(websocket, 503, f"this worker has its {limit} WebSocket connections: try again")
        return
    client = hub.connect(websocket, user)  # before accept: an event published once the client is connected reaches it
    try:
        await state.rpc.call("ws_open", user=user, pid=os.getpid())  # the primary counts per user, cluster-wide
    except RpcError as e:
        hub.disconnect(client)
        await _deny(websocket, e.status, str(e))
        return
    try:
        await websocket.accept()
        # lastSeq lets a client that has seen no event yet resume from here after a drop
        client.offer(json.dumps({"type": "welcome", "worker": os.getpid(), "lastSeq": hub.last_seq}))
        release = asyncio.get_running_loop().call_later(HOLD_FOR_RESUME_S, _release, hub, client)
        while True:
            text = await websocket.receive_text()
            release.cancel()
            await _handle(client, text, state)
    except (WebSocketDisconnect, RuntimeError):
        pass  # closed by the client, or by the hub for being too slow
    finally:
        hub.disconnect(client)
        with contextlib.suppress(RpcError):  # however it ended; if this worker dies, the primary forgets its count
            await state.rpc.call("ws_close", user=user, pid=os.getpid())


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))


def _release(hub: Hub, client: WsClient) -> None:
    """The first message decides: a resume replays, then goes live; anything else (or silence) goes live now."""
    if client.holding and not client.release_live_events():
        hub.drop(client)


async def _handle(client: WsClient, text: str, state: Any) -> None:
    try:
        message = request_body.loads(text)  # bounded: depth, numbers, surrogates (a malformed one is an error reply)
    except request_body.BadJson:
        message = None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind != "resume" and client.holding:
        _release(state.hub, client)
    if message is None:
        await _reply(client, {"type": "error", "error": "messages must be JSON"})
        return
    video_id = message.get("videoId") if isinstance(message, dict) else None
    if kind in ("subscribe-video", "unsubscribe-video"):
        if not isinstance(video_id, str) or not video_id:
            await _reply(client, {"type": "error", "error": "videoId is required"})
            return
        if kind == "subscribe-video":
            if not await _may_see_video(state, client, video_id):
                await _reply(client, {"type": "error", "error": f"video {video_id} not found", "videoId": video_id})
                return
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


async def _may_see_video(state: Any, client: WsClient, video_id: str) -> bool:
    try:
        await state.rpc.call("get_video", videoId=video_id, user={"userId": client.user_id, "admin": client.admin})
    except RpcError:
        return False
    return True


async def _resume(client: WsClient, since: Any, state: Any) -> None:
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ:
        _release(state.hub, client)
        await _reply(client, {"type": "error", "error": "since must be a seq number (0 or more)"})
        return
    outcome = await replay(client, state.rpc, since)
    if outcome is None:
        state.hub.drop(client)
        return
    replayed, last_replayed = outcome
    await _reply(client, {"type": "resumed", "since": since, "replayed": replayed, "lastSeq": last_replayed})


async def _reply(client: WsClient, message: dict[str, Any]) -> None:
    client.offer(json.dumps(message))
