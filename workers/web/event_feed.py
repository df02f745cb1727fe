"""Events from the primary to this worker, with no gap: the PUB socket may drop messages to a slow
subscriber, so a jump in ``seq`` is filled from the primary's store before going on. Each event, in seq
order, goes to the sink (job and queue events to the clients, session events to the session cache)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import zmq
import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import Event, ProtocolError
from workers.web.rpc import ControlClient, RpcError

log = get_logger()

PAGE = 500
QUIET_CHECK_MS = 1000
BURST = 256  # events handed on before the loop runs anything else

EventSink = Callable[[Event, str], None]


async def stored_events(rpc: ControlClient, since: int, until: int | None = None,
                        user: dict[str, Any] | None = None) -> AsyncIterator[tuple[Event, str]]:
    """The events after ``since`` (up to ``until``, inclusive), from the primary's store, in order;
    with ``user``, only those that user may see (the primary reads them through an index)."""
    cursor = since
    scope = {"user": user} if user else {}
    while until is None or cursor < until:
        page = await rpc.call("events_since", since=cursor, limit=PAGE, **scope)
        for body in page["events"]:
            event = Event.from_body(body.encode())
            if until is not None and event.seq > until:
                return
            cursor = event.seq
            yield event, body
        if len(page["events"]) < PAGE:
            return


class SessionTripwire:
    """A second SUB socket on the event endpoint, for session events only, read by nobody but ``newest``:
    the feed's own socket is never empty under a stream of job events, so asking it whether a session
    event is waiting would send every request to the primary for its session."""

    def __init__(self, socket: zmq.Socket) -> None:
        """``socket``: a plain (not asyncio) SUB socket subscribed to SESSION_TOPIC, connected."""
        self._socket = socket
        self._newest = 0

    def newest(self) -> int:
        """The seq of the newest session event that reached this worker."""
        while self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # asked on every request: no zmq.Again raised
            frames = self._socket.recv_multipart(zmq.NOBLOCK)
            try:
                self._newest = max(self._newest, Event.decode(frames).seq)
            except ProtocolError:
                continue
        return self._newest

    def close(self) -> None:
        self._socket.close(linger=0)


class EventFeed:
    def __init__(self, sub: zmq.asyncio.Socket, rpc: ControlClient, sessions: SessionTripwire) -> None:
        self._sub = sub
        self._rpc = rpc
        self._sessions = sessions
        self._sink: EventSink = lambda _event, _text: None
        self._filling = False  # fetching from the store: events are in hand that the sink has not had
        self._last_seq = 0  # the newest event gone to the sink

    def up_to_date(self) -> bool:
        """Every session event that reached this worker has gone to the sink (and no gap is being filled).
        A cached session is trusted only then: a session event may be the one still waiting."""
        return not self._filling and self._sessions.newest() <= self._last_seq

    async def pump(self, sink: EventSink) -> None:
        """Hand each event to ``sink`` once, in seq order. A jump in seq, or a quiet spell (the drop may have
        hit the end of a burst), sends the pump to the store for what the PUB socket dropped."""
        self._sink = sink
        self._last_seq = int(await self._rpc.call("last_seq"))
        waiting = zmq.Socket.shadow(self._sub.underlying)  # read without a future each: a burst at once
        while True:
            if not await self._sub.poll(QUIET_CHECK_MS):
                self._last_seq = await self._catch_up(self._last_seq, None)
                self._filling = False
                continue
            for _ in range(BURST):
                try:
                    frames = waiting.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                await self._take(frames)

    async def _take(self, frames: list[bytes]) -> None:
        try:
            event = Event.decode(frames)
        except ProtocolError as e:
            log.warning("bad event", error=str(e))
            return
        if event.seq <= self._last_seq:
            return
        if event.seq > self._last_seq + 1:
            self._last_seq = await self._catch_up(self._last_seq, event.seq - 1)
        self._sink(event, frames[1].decode())
        self._filling = False
        self._last_seq = event.seq

    async def _catch_up(self, last_seq: int, until: int | None) -> int:
        self._filling = True
        start = last_seq
        try:
            async for event, body in stored_events(self._rpc, last_seq, until):
                self._sink(event, body)
                last_seq = event.seq
        except RpcError as e:
            log.warning("cannot fetch missed events", error=str(e))
        if last_seq > start:
            log.warning("events dropped by the PUB socket were fetched from the store", count=last_seq - start)
        return last_seq
