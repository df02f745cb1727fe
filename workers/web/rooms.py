"""Who hears an event: an index of the WebSocket clients by room, by user and by session.

A client hears all it may see (its user's jobs; every job for an administrator) until it joins a room;
then only the events of its rooms, until it listens to all again. Leaving its last room does not widen
it: it hears cluster notices only until it joins a room or sends ``subscribe-all``. Cluster notices (an
event without a ``jobId``, e.g. ``queue:paused``) reach every client. The index answers an event's
audience from the rooms and the user it names, never by testing every connection.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


@dataclass(frozen=True)
class RoomKind:
    key: str  # the event data field that names the room
    noun: str
    lookup_op: str  # the control op that answers 404 for one the client may not see


VIDEO = RoomKind("videoId", "video", "get_video")
JOB = RoomKind("jobId", "job", "get_job")
ROOM_KINDS = (VIDEO, JOB)


class Member(Protocol):
    user_id: str
    admin: bool
    session: str
    rooms: dict[str, set[str]] | None  # None: it hears all it may see


M = TypeVar("M", bound=Member)


class RoomIndex(Generic[M]):
    def __init__(self) -> None:
        self.everyone: set[M] = set()
        self._admins: set[M] = set()  # administrators who hear everything
        self._by_user: dict[str, set[M]] = {}  # the others who hear all they may see
        self._rooms: dict[str, dict[str, set[M]]] = {kind.key: {} for kind in ROOM_KINDS}
        self._sessions: dict[str, set[M]] = {}

    def add(self, client: M) -> None:
        self.everyone.add(client)
        _put(self._sessions, client.session, client)
        self._listen_to_all(client)

    def remove(self, client: M) -> None:
        if client not in self.everyone:
            return
        self.everyone.discard(client)
        _take(self._sessions, client.session, client)
        self._stop_listening_to_all(client)
        for key, ids in (client.rooms or {}).items():
            for room_id in ids:
                _take(self._rooms[key], room_id, client)

    def join(self, client: M, kind: RoomKind, room_id: str) -> None:
        if client.rooms is None:
            self._stop_listening_to_all(client)
            client.rooms = {}  # a set per kind of room it joins: most join rooms of one kind
        client.rooms.setdefault(kind.key, set()).add(room_id)
        _put(self._rooms[kind.key], room_id, client)

    def leave(self, client: M, kind: RoomKind, room_id: str) -> None:
        if client.rooms is not None and room_id in client.rooms.get(kind.key, ()):
            client.rooms[kind.key].discard(room_id)
            _take(self._rooms[kind.key], room_id, client)

    def listen_to_all(self, client: M) -> None:
        """Leave every room: hear all it may see again."""
        for key, ids in (client.rooms or {}).items():
            for room_id in ids:
                _take(self._rooms[key], room_id, client)
        if client.rooms is not None:
            client.rooms = None
            self._listen_to_all(client)

    def audience(self, data: dict[str, object]) -> Collection[M]:
        """The clients an event is for (each once), before the per-client check of what it may see."""
        if "jobId" not in data:
            return list(self.everyone)
        groups = [group for group in (
            self._admins, self._by_user.get(str(data.get("userId"))),
            *(self._rooms[kind.key].get(str(data.get(kind.key))) for kind in ROOM_KINDS),
        ) if group]
        if len(groups) == 1:
            return list(groups[0])
        return set().union(*groups)

    def of_session(self, token_hash: str) -> list[M]:
        return list(self._sessions.get(token_hash, ()))

    def room_count(self, client: M) -> int:
        return sum(len(ids) for ids in (client.rooms or {}).values())

    def _listen_to_all(self, client: M) -> None:
        if client.admin:
            self._admins.add(client)
        else:
            _put(self._by_user, client.user_id, client)

    def _stop_listening_to_all(self, client: M) -> None:
        self._admins.discard(client)
        _take(self._by_user, client.user_id, client)


def _put(index: dict[str, set[M]], key: str, client: M) -> None:
    index.setdefault(key, set()).add(client)


def _take(index: dict[str, set[M]], key: str, client: M) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(client)
        if not members:
            del index[key]
