"""Events from the primary to the hub, with no gap: the PUB socket may drop messages to a slow
subscriber, so a jump in ``seq`` is filled from the primary's store before going on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import Event, ProtocolError
from workers.web.hub import Hub, WsClient
from workers.web.rpc import ControlClient

log = get_logger()

PAGE = 500


async def stored_events(rpc: ControlClient, since: int, until: int | None = None) -> AsyncIterator[tuple[Event, str]]:
    """The events after ``since`` (up to ``until``, inclusive), from the primary's store, in order."""
    cursor = since
    while until is None or cursor < until:
        page = await rpc.call("events_since", since=cursor, limit=PAGE)
        for body in page["events"]:
            event = Event.from_body(body.encode())
            if until is not None and event.seq > until:
                return
            cursor = event.seq
            yield event, body
        if len(page["events"]) < PAGE:
            return


async def pump_events(sub: zmq.asyncio.Socket, hub: Hub, rpc: ControlClient) -> None:
    last_seq = 0
    while True:
        frames = await sub.recv_multipart()
        try:
            event = Event.decode(frames)
        except ProtocolError as e:
            log.warning("bad event", error=str(e))
            continue
        if event.seq <= last_seq:
            continue
        if last_seq and event.seq > last_seq + 1:
            log.warning("events dropped by the PUB socket: fetching them", missing=event.seq - last_seq - 1)
            async for missed, body in stored_events(rpc, last_seq, event.seq - 1):
                hub.deliver(missed, body)
        hub.deliver(event, frames[1].decode())
        last_seq = event.seq


async def replay(client: WsClient, rpc: ControlClient, since: int) -> int:
    """Send a resuming client what it missed, then the live events held meanwhile; no gap, no duplicate."""
    client.hold_live_events(since)
    replayed = 0
    try:
        async for event, body in stored_events(rpc, since):
            if client.may_see(event) and event.seq > client.last_seq:
                if not client.offer(body):
                    return -1
                client.last_seq = event.seq
                replayed += 1
    finally:
        released = client.release_live_events()
    return replayed if released else -1
