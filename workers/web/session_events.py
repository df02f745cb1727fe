"""Where each event from the primary goes: job and queue events to the WebSocket clients; session events
(never seen by a client) to the session cache, and the WebSockets of an ended session are closed (4401)."""

from __future__ import annotations

from cluster.logs import get_logger
from cluster.protocol import Event, SessionEventName, reaches_clients
from workers.web.auth import SessionCache
from workers.web.event_feed import EventSink
from workers.web.hub import Hub

log = get_logger()


def event_sink(hub: Hub, sessions: SessionCache) -> EventSink:
    def sink(event: Event, text: str) -> None:
        if reaches_clients(event.event):
            hub.deliver(event, text)
            return
        hub.note_seq(event.seq)
        apply_session_event(event, hub, sessions)

    return sink


def apply_session_event(event: Event, hub: Hub, sessions: SessionCache) -> None:
    user_id = str(event.data.get("userId", ""))
    if event.event == SessionEventName.ENDED.value:
        hashes = [str(h) for h in event.data.get("tokenHashes") or ()]
        sessions.end(hashes)
        closed = hub.end_sessions(hashes)
        if closed:
            log.info("closed the WebSockets of ended sessions", userId=user_id, closed=closed)
    elif event.event == SessionEventName.USER_CHANGED.value:
        sessions.user_changed(user_id)
