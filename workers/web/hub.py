"""WebSocket fan-out: each event reaches each client that may see it and wants it, once and in seq order.

The clients of an event are found through the room index (rooms.py). Each event's frame is built once and
written to every client's socket (ws_frames.py); a client whose socket buffer is full is dropped (it can
reconnect and resume) and never slows the others. Held events and replays are resume.py's.
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.protocol import CLOSE_SESSION_ENDED, Event
from workers.web.resume import Resume
from workers.web.rooms import RoomIndex, RoomKind
from workers.web.ws_frames import FrameWriter, text_frame

CLOSE_TOO_SLOW = 1013  # "try again later"


class WsClient:
    __slots__ = ("_writer", "admin", "resume", "rooms", "session", "user_id")

    def __init__(self, writer: FrameWriter, user_id: str, admin: bool, session: str, held_max: int) -> None:
        self._writer = writer
        self.user_id = user_id
        self.admin = admin
        self.session = session  # the hash of its session token: the session's end closes it
        self.rooms: dict[str, set[str]] | None = None  # room kind key -> ids; None: all it may see
        self.resume = Resume(held_max)

    def may_see(self, event: Event) -> bool:
        """Its own user's jobs; every job for an administrator; cluster notices (queue paused) for all."""
        if self.admin or "jobId" not in event.data:
            return True
        return event.data.get("userId") == self.user_id

    def wants(self, event: Event) -> bool:
        """May see it, and its rooms (if it joined any) name it; cluster notices always."""
        if not self.may_see(event):
            return False
        if self.rooms is None or "jobId" not in event.data:
            return True
        return any(event.data.get(key) in ids for key, ids in self.rooms.items())

    def write(self, text: str, frame: bytes | None = None) -> bool:
        """Send now; False when the client can't keep up (or is gone)."""
        return self._writer.write(frame or text_frame(text.encode()))

    def close(self, code: int, reason: str) -> None:
        self._writer.close(code, reason)


class Hub:
    def __init__(self, held_max: int) -> None:
        self._held_max = held_max  # live events held for one client during a resume before it is dropped
        self.index: RoomIndex[WsClient] = RoomIndex()
        self.delivered = 0
        self.last_seq = 0  # of the newest event this worker has seen

    @property
    def clients(self) -> set[WsClient]:
        return self.index.everyone

    def connect(self, writer: FrameWriter, user_id: str, admin: bool, session: str) -> WsClient:
        client = WsClient(writer, user_id, admin, session, self._held_max)
        self.index.add(client)
        return client

    def disconnect(self, client: WsClient) -> None:
        self.index.remove(client)

    def join(self, client: WsClient, kind: RoomKind, room_id: str) -> None:
        self.index.join(client, kind, room_id)

    def leave(self, client: WsClient, kind: RoomKind, room_id: str) -> None:
        self.index.leave(client, kind, room_id)

    def listen_to_all(self, client: WsClient) -> None:
        self.index.listen_to_all(client)

    def deliver(self, event: Event, text: str) -> None:
        self.last_seq = max(self.last_seq, event.seq)
        audience = self.index.audience(event.data)
        if not audience:  # every event reaches every web worker: most have nobody in its rooms
            return
        frame = text_frame(text.encode())  # built once for every client
        for client in audience:
            if not client.may_see(event):
                continue
            if client.resume.offer(client, event, text, frame):
                self.delivered += 1
            else:
                self.drop(client)

    def note_seq(self, seq: int) -> None:
        """An event no client hears (a session event) still moves the seq a new client may resume from."""
        self.last_seq = max(self.last_seq, seq)

    def end_sessions(self, token_hashes: Iterable[str]) -> int:
        """Close the WebSockets of sessions that ended (4401); returns how many."""
        closed = 0
        for token_hash in token_hashes:
            for client in self.index.of_session(token_hash):
                self._close(client, CLOSE_SESSION_ENDED, "session ended")
                closed += 1
        return closed

    def drop(self, client: WsClient) -> None:
        """Too slow: close it rather than buffer without bound; it can reconnect and resume."""
        self._close(client, CLOSE_TOO_SLOW, "too slow: resume")

    def close_all(self, code: int, reason: str) -> None:
        for client in list(self.clients):
            self._close(client, code, reason)

    def _close(self, client: WsClient, code: int, reason: str) -> None:
        """Hears nothing more from now on; the closing handshake starts at once (no task waits to send it)."""
        self.index.remove(client)
        client.close(code, reason)
