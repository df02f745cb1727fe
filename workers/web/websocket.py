"""The /ws endpoint: room subscriptions from the client, events from the hub (rooms.py says who hears
what; resume.py holds, replays and releases)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from cluster.passwords import token_hash
from cluster.protocol import ClientMessage
from workers.web import request_body, resume
from workers.web.auth import current_user, session_token
from workers.web.csrf import websocket_problem
from workers.web.errors import ApiError
from workers.web.hub import WsClient
from workers.web.rooms import JOB, VIDEO, RoomKind
from workers.web.rpc import RpcError
from workers.web.ws_frames import frame_writer

MAX_ROOMS = 100  # per connection
MAX_ROOM_ID = 200  # characters


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The handshake and the first moments run as an ASGI task; then the connection is handed to a
    ``Conversation`` and the task ends (ws_frames.py), so an idle connection holds no task."""
    state = websocket.app.state.worker
    hub = state.hub
    if problem := websocket_problem(websocket):  # before anything else: a page elsewhere has the cookie too
        await _deny(websocket, 403, problem)
        return
    changes = state.sessions.changes
    try:
        user = await current_user(websocket)
    except ApiError as e:
        await _deny(websocket, e.status, str(e))
        return
    limit = state.config.max_ws_per_worker
    if limit and len(hub.clients) >= limit:
        await _deny(websocket, 503, f"this worker has its {limit} WebSocket connections: try again")
        return
    # before accept: an event published once the client is connected reaches it
    writer = frame_writer(websocket.scope)
    client = hub.connect(writer, str(user["userId"]), bool(user.get("admin")),
                         token_hash(session_token(websocket) or ""))
    try:
        if state.sessions.changes != changes:  # a session ended while this one was looked up: perhaps this one
            await current_user(websocket)
        await state.rpc.call("ws_open", user=user, pid=os.getpid())  # the primary counts per user, cluster-wide
    except (ApiError, RpcError) as e:
        hub.disconnect(client)
        await _deny(websocket, e.status, str(e))
        return
    conversation = Conversation(client, state)
    try:
        await websocket.accept()
        # lastSeq lets a client that has seen no event yet resume from here after a drop
        client.write(json.dumps({"type": "welcome", "worker": os.getpid(), "lastSeq": hub.last_seq}))
        since = resume.since_in_url(websocket.query_params.get("since"))
        if since is None:
            resume.start(hub, client)
        else:
            await resume.resume(hub, client, state.rpc, since)
    except (WebSocketDisconnect, RuntimeError):  # the peer left during the accept
        conversation.on_closed()
        return
    except BaseException:  # the worker stops, or a bug (uvicorn logs it)
        conversation.on_closed()
        raise
    writer.listen(conversation)  # a connection that closed meanwhile ends the conversation at once


class Conversation:
    """One connection's messages after the handshake, and its end (``ws_frames.Listener``)."""

    __slots__ = ("client", "state")

    def __init__(self, client: WsClient, state: Any) -> None:
        self.client = client
        self.state = state

    async def on_text(self, text: str) -> None:
        await _handle(self.client, text, self.state)

    def on_closed(self) -> None:
        """However it ended (the client, the hub, the worker); if this worker dies, the primary forgets its count."""
        client, state = self.client, self.state
        state.hub.disconnect(client)
        task = asyncio.get_running_loop().create_task(_ws_close(state.rpc, client))
        _closing_calls.add(task)
        task.add_done_callback(_closing_calls.discard)


_closing_calls: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references


async def _ws_close(rpc: Any, client: WsClient) -> None:
    with contextlib.suppress(RpcError):
        await rpc.call("ws_close", user={"userId": client.user_id, "admin": client.admin}, pid=os.getpid())


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    await websocket.send_denial_response(JSONResponse({"error": message}, status_code=status))


async def _handle(client: WsClient, text: str, state: Any) -> None:
    message = _parse(text)
    kind = message.get("type") if message is not None else None
    resume.before_message(state.hub, client, kind)
    if message is None:
        _reply(client, {"type": "error", "error": "messages must be JSON objects"})
        return
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        _reply(client, {"type": "error", "error": f"unknown message type {_short(kind)}"})
        return
    await handler(client, message, state)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        message = request_body.loads(text)  # bounded: depth, numbers, surrogates (a malformed one is an error reply)
    except request_body.BadJson:
        return None
    return message if isinstance(message, dict) else None


def _room_handler(kind: RoomKind, join: bool) -> Callable[[WsClient, dict[str, Any], Any], Awaitable[None]]:
    async def handle(client: WsClient, message: dict[str, Any], state: Any) -> None:
        room_id = message.get(kind.key)
        if not isinstance(room_id, str) or not room_id or len(room_id) > MAX_ROOM_ID:
            _reply(client, {"type": "error", "error": f"{kind.key} is required (a string of 1-{MAX_ROOM_ID})"})
        elif not join:
            state.hub.leave(client, kind, room_id)
            _reply(client, {"type": "unsubscribed", kind.key: room_id})
        elif state.hub.index.room_count(client) >= MAX_ROOMS:
            _reply(client, {"type": "error", "error": f"at most {MAX_ROOMS} rooms per connection", kind.key: room_id})
        else:
            await _join(client, kind, room_id, state)

    return handle


async def _join(client: WsClient, kind: RoomKind, room_id: str, state: Any) -> None:
    """Only a room of a video or job the client may see; one it may not is answered as one that does not exist."""
    try:
        await state.rpc.call(kind.lookup_op, **{kind.key: room_id}, user={"userId": client.user_id,
                                                                          "admin": client.admin})
    except RpcError as e:
        error = f"{kind.noun} {room_id} not found" if e.status in (403, 404) else str(e)
        _reply(client, {"type": "error", "error": error, kind.key: room_id})
        return
    if client in state.hub.clients:  # not closed meanwhile
        state.hub.join(client, kind, room_id)
        _reply(client, {"type": "subscribed", kind.key: room_id})


async def _subscribe_all(client: WsClient, _message: dict[str, Any], state: Any) -> None:
    state.hub.listen_to_all(client)
    _reply(client, {"type": "subscribed", "all": True})


async def _resume(client: WsClient, message: dict[str, Any], state: Any) -> None:
    await resume.resume(state.hub, client, state.rpc, message.get("since"))


HANDLERS: dict[str, Callable[[WsClient, dict[str, Any], Any], Awaitable[None]]] = {
    ClientMessage.SUBSCRIBE_VIDEO.value: _room_handler(VIDEO, join=True),
    ClientMessage.UNSUBSCRIBE_VIDEO.value: _room_handler(VIDEO, join=False),
    ClientMessage.SUBSCRIBE_JOB.value: _room_handler(JOB, join=True),
    ClientMessage.UNSUBSCRIBE_JOB.value: _room_handler(JOB, join=False),
    ClientMessage.SUBSCRIBE_ALL.value: _subscribe_all,
    ClientMessage.RESUME.value: _resume,
}


def _short(value: object) -> str:
    return repr(value)[:80]


def _reply(client: WsClient, message: dict[str, Any]) -> None:
    client.write(json.dumps(message))
