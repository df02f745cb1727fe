"""WebSocket fan-out: each event reaches each client that may see it, once and in seq order.

Each event's frame is built once and written to every client's socket (ws_frames.py); a client whose
socket buffer is full is dropped (it can reconnect and resume) and never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.websockets import WebSocket

from cluster.protocol import Event
from workers.web.ws_frames import frame_writer, text_frame

CLOSE_TOO_SLOW = 1013  # "try again later"


class WsClient:
    def __init__(self, websocket: WebSocket, held_max: int, user_id: str, admin: bool) -> None:
        self.websocket = websocket
        self._writer = frame_writer(websocket.scope)
        self.rooms: set[str] = set()  # videos it subscribed to (only ones it may see)
        self.user_id = user_id
        self.admin = admin
        self.last_seq = 0  # of the last event sent to this client: nothing at or below it is sent again
        self._held_max = held_max
        # Live events are held back while a resume replays, and for the first moments of a connection:
        # a client that resumes says so in its first message, and nothing newer may overtake the replay.
        self._held: list[tuple[int, str]] | None = []

    def may_see(self, event: Event) -> bool:
        """Its own user's jobs; every job for an administrator; cluster notices (queue paused) for all."""
        if self.admin or "jobId" not in event.data:
            return True
        return event.data.get("userId") == self.user_id

    def offer_event(self, seq: int, text: str, frame: bytes | None = None) -> bool:
        if self._held is not None:
            self._held.append((seq, text))
            return len(self._held) <= self._held_max
        if seq <= self.last_seq:
            return True
        if not self.offer(text, frame):
            return False
        self.last_seq = seq
        return True

    def offer(self, text: str, frame: bytes | None = None) -> bool:
        """Send now; False when the client can't keep up (or is gone)."""
        return self._writer.write(frame or text_frame(text.encode()))

    @property
    def holding(self) -> bool:
        return self._held is not None

    def hold_live_events(self, since: int) -> None:
        if self._held is None:
            self._held = []
        self.last_seq = max(self.last_seq, since)

    def release_live_events(self) -> bool:
        held, self._held = self._held or [], None
        return all(self.offer_event(seq, text) for seq, text in held)


class Hub:
    def __init__(self, held_max: int) -> None:
        self._held_max = held_max  # live events held for one client during a resume before it is dropped
        self.clients: set[WsClient] = set()
        self.delivered = 0
        self.last_seq = 0  # of the newest event this worker has seen

    def connect(self, websocket: WebSocket, user: dict[str, Any]) -> WsClient:
        client = WsClient(websocket, self._held_max, str(user["userId"]), bool(user.get("admin")))
        self.clients.add(client)
        return client

    def disconnect(self, client: WsClient) -> None:
        self.clients.discard(client)

    def deliver(self, event: Event, text: str) -> None:
        self.last_seq = max(self.last_seq, event.seq)
        frame = text_frame(text.encode())  # built once for every client
        for client in list(self.clients):
            if not client.may_see(event):
                continue
            if client.offer_event(event.seq, text, frame):
                self.delivered += 1
            else:
                self.drop(client)

    def drop(self, client: WsClient) -> None:
        """Too slow: close it rather than buffer without bound; it can reconnect and resume."""
        self.clients.discard(client)
        asyncio.get_running_loop().create_task(_close(client.websocket, CLOSE_TOO_SLOW, "too slow: resume"))

    async def close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(*(_close(c.websocket, code, reason) for c in self.clients))


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the peer may be gone already
        await websocket.close(code, reason)
