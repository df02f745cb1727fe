"""Telling every web worker at once that sessions ended or a profile changed.

A session event is numbered and stored like any event before it is published, so a web worker whose SUB
socket dropped it finds it when it fills the gap from the store; no worker keeps a revoked session.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cluster.logs import get_logger
from cluster.protocol import SessionEventName
from primary.event_bus import EventBus
from primary.store import JobStore

log = get_logger()


class SessionNotices:
    def __init__(self, bus: EventBus, store: JobStore) -> None:
        self._bus = bus
        self._store = store

    def ended(self, user_id: str, token_hashes: Iterable[str], reason: str) -> None:
        hashes = list(token_hashes)
        if hashes:
            self._publish(SessionEventName.ENDED, {"userId": user_id, "tokenHashes": hashes, "reason": reason})
            log.info("sessions ended", userId=user_id, sessions=len(hashes), reason=reason)

    def user_changed(self, user_id: str) -> None:
        self._publish(SessionEventName.USER_CHANGED, {"userId": user_id})

    def _publish(self, name: SessionEventName, data: dict[str, Any]) -> None:
        event = self._bus.make(name.value, data)
        self._store.append_events([event])
        self._bus.publish(event)
