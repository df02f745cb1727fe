"""Events from the primary to the hub, with no gap: the PUB socket may drop messages to a slow
subscriber, so a jump in ``seq`` is filled from the primary's store before going on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import Event, ProtocolError
from workers.web.hub import Hub, WsClient
from workers.web.rpc import ControlClient, RpcError

log = get_logger()

PAGE = 500
QUIET_CHECK_MS = 1000


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


async def pump_events(sub: zmq.asyncio.Socket, hub: Hub, rpc: ControlClient) -> None:
    """Deliver each event once, in seq order. A jump in seq, or a quiet spell (the drop may have hit
    the end of a burst), sends the pump to the store for what the PUB socket dropped."""
    last_seq = int(await rpc.call("last_seq"))
    while True:
        if not await sub.poll(QUIET_CHECK_MS):
            last_seq = await _catch_up(hub, rpc, last_seq, None)
            continue
        frames = await sub.recv_multipart()
        try:
            event = Event.decode(frames)
        except ProtocolError as e:
            log.warning("bad event", error=str(e))
            continue
        if event.seq <= last_seq:
            continue
        if event.seq > last_seq + 1:
            last_seq = await _catch_up(hub, rpc, last_seq, event.seq - 1)
        hub.deliver(event, frames[1].decode())
        last_seq = event.seq


async def _catch_up(hub: Hub, rpc: ControlClient, last_seq: int, until: int | None) -> int:
    start = last_seq
    try:
        async for event, body in stored_events(rpc, last_seq, until):
            hub.deliver(event, body)
            last_seq = event.seq
    except RpcError as e:
        log.warning("cannot fetch missed events", error=str(e))
    if last_seq > start:
        log.warning("events dropped by the PUB socket were fetched from the store", count=last_seq - start)
    return last_seq


async def replay(client: WsClient, rpc: ControlClient, since: int) -> tuple[int, int] | None:
    """Send a resuming client what it missed, then the live events held meanwhile; no gap, no duplicate.
    Returns (events replayed, seq of the last one), or None when the client could not keep up."""
    client.hold_live_events(since)
    replayed = 0
    try:
        async for event, body in stored_events(rpc, since, user={"userId": client.user_id, "admin": client.admin}):
            if client.may_see(event) and event.seq > client.last_seq:
                if not client.offer(body):
                    return None
                client.last_seq = event.seq
                replayed += 1
        last_replayed = client.last_seq
    finally:
        released = client.release_live_events()
    return (replayed, last_replayed) if released else None
