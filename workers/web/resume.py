"""Resuming a WebSocket client, the whole state machine: hold, replay, release.

A connection starts HOLDING: live events are kept back, because a client that resumes says so in its
first message and nothing newer may overtake the replay. Room messages (subscribe/unsubscribe) may come
first and keep it holding, so that a page re-joins its rooms and then resumes with those rooms. A resume
REPLAYS from the primary's store what the client missed (what it may see and its rooms allow), then
RELEASES the held events; any other message, or HOLD_FOR_RESUME_S of quiet, releases at once. A resume
later on holds again for its replay. ``last_seq`` is the seq of the last event sent: nothing at or below
it is sent again, so there is no duplicate, and events go out in seq order, so there is no gap.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from cluster.protocol import ClientMessage, Event, reaches_clients
from workers.web import request_body
from workers.web.event_feed import stored_events
from workers.web.rpc import ControlClient, RpcError

if TYPE_CHECKING:
    from workers.web.hub import Hub, WsClient

HOLD_FOR_RESUME_S = 0.5
LATE_TIMER_S = 0.05  # a timer this late means the loop has had no time to read the socket
MAX_SINCE = 2**53 - 1  # the largest seq a page's numbers hold exactly
ROOM_MESSAGES = frozenset(m.value for m in ClientMessage if m not in (ClientMessage.RESUME,))


class Resume:
    """One connection's side: the events held back, and the seq of the last one sent."""

    __slots__ = ("_held", "_held_max", "_timer", "last_seq")

    def __init__(self, held_max: int) -> None:
        self.last_seq = 0
        self._held: list[tuple[Event, str, bytes | None]] | None = []  # with the frame the hub built once
        self._held_max = held_max  # a client holding more than this is dropped (it can resume)
        self._timer: asyncio.TimerHandle | None = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    def offer(self, client: WsClient, event: Event, text: str, frame: bytes | None) -> bool:
        """A live event: held, or sent now. False when the client cannot keep up."""
        if self._held is not None:
            self._held.append((event, text, frame))
            return len(self._held) <= self._held_max
        return self.send(client, event.seq, text, frame)

    def send(self, client: WsClient, seq: int, text: str, frame: bytes | None = None) -> bool:
        if seq <= self.last_seq:
            return True
        if not client.write(text, frame):
            return False
        self.last_seq = seq
        return True

    def hold(self, since: int) -> None:
        self._cancel_timer()
        if self._held is None:
            self._held = []
        self.last_seq = max(self.last_seq, since)

    def release(self, client: WsClient) -> bool:
        """Go live: send what was held, as the client's rooms now allow."""
        self._cancel_timer()
        held, self._held = self._held or [], None
        return all(self.send(client, event.seq, text, frame) for event, text, frame in held if client.wants(event))

    def arm(self, hub: Hub, client: WsClient) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        due = loop.time() + HOLD_FOR_RESUME_S
        self._timer = loop.call_at(due, self._quiet, hub, client, due)

    def _quiet(self, hub: Hub, client: WsClient, due: float | None) -> None:
        """The hold's time is up, unless the timer fired late: then the loop was busy and may not yet have read
        what the client sent meanwhile, so it looks once more, a moment later."""
        loop = asyncio.get_running_loop()
        if due is not None and loop.time() - due > LATE_TIMER_S:
            self._timer = loop.call_later(LATE_TIMER_S, self._quiet, hub, client, None)
            return
        self._timer = None
        release(hub, client)

    def wait_for_replay(self) -> None:
        """A resume came: hold until its replay is done, however long the primary takes to answer."""
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def start(hub: Hub, client: WsClient) -> None:
    """A new connection holds until its first message decides (or HOLD_FOR_RESUME_S of quiet)."""
    client.resume.arm(hub, client)


def since_in_url(query: str | None) -> int | str | None:
    """``/ws?since=N``: a resume that no timer can race (the first message is the other way). Returns the
    seq, None without one, or the text as given when it spells no number (``resume`` answers the error)."""
    if query is None:
        return None
    seq = request_body.ascii_int(query, len(str(MAX_SINCE)))
    return query if seq is None else seq


def before_message(hub: Hub, client: WsClient, kind: object) -> None:
    """A room message keeps the first hold (a resume may follow); anything but a resume releases it."""
    if not client.resume.holding:
        return
    if kind == ClientMessage.RESUME.value:
        client.resume.wait_for_replay()
    elif kind in ROOM_MESSAGES:
        client.resume.arm(hub, client)
    else:
        release(hub, client)


def release(hub: Hub, client: WsClient) -> None:
    if client.resume.holding and not client.resume.release(client):
        hub.drop(client)


async def resume(hub: Hub, client: WsClient, rpc: ControlClient, since: Any) -> None:
    """Replay what the client missed after ``since``, then go live; an unusable ``since`` is an error."""
    problem = await _check_since(rpc, since, hub.last_seq)
    if problem:
        release(hub, client)
        _reply(client, {"type": "error", "error": problem})
        return
    client.resume.hold(since)
    try:
        replayed, error = await _replay(client, rpc, since)
    except _TooSlow:
        hub.drop(client)
        return
    last_replayed = client.resume.last_seq
    if not client.resume.release(client):
        hub.drop(client)
        return
    if error:
        _reply(client, {"type": "error", "error": f"the replay stopped: {error}; resume again"})
    else:
        _reply(client, {"type": "resumed", "since": since, "replayed": replayed, "lastSeq": last_replayed})


class _TooSlow(Exception):
    pass


async def _check_since(rpc: ControlClient, since: Any, seen: int) -> str | None:
    """None for a seq the client may resume from; ``seen`` (the newest this worker has had) needs no question
    to the primary, which is never behind it."""
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SINCE:
        return f"since must be a seq number from 0 to {MAX_SINCE}"
    if since <= seen:
        return None
    try:
        newest = int(await rpc.call("last_seq"))
    except RpcError as e:
        return f"cannot resume now: {e}"
    if since > newest:
        return f"since {since} is past the newest event ({newest})"
    return None


async def _replay(client: WsClient, rpc: ControlClient, since: int) -> tuple[int, str | None]:
    replayed = 0
    try:
        # only the events this user may see, read by the primary through an index
        async for event, body in stored_events(rpc, since, user={"userId": client.user_id, "admin": client.admin}):
            if reaches_clients(event.event) and client.wants(event) and event.seq > client.resume.last_seq:
                if not client.resume.send(client, event.seq, body):
                    raise _TooSlow
                replayed += 1
    except RpcError as e:
        return replayed, str(e)
    return replayed, None


def _reply(client: WsClient, message: dict[str, Any]) -> None:
    client.write(json.dumps(message))
