"""The event stream of remote web tiers: a PUB socket of its own on ``--remote-bind`` PORT+1, fed by the bus.

A PUB socket cannot refuse what it sends to a key revoked since its connection was made, and unbinding an
endpoint does not reliably close the connections made through it (libzmq leaves one now and then), so a
revocation closes this socket, which closes them all, and opens a new one on the same port. The tiers whose
keys still hold reconnect at once and fetch from the store what they missed (workers/web/event_feed.py); a
revoked key's handshake is refused. The local ipc subscribers, on the bus's own socket, never notice.
"""

from __future__ import annotations

import asyncio
import time

import zmq

from cluster.logs import get_logger
from cluster.protocol import Event
from primary.remote_access import RemoteAccess

log = get_logger()

REBIND_PATIENCE_S = 5.0  # a closed socket's port is released by ZMQ's I/O thread a moment later
REBIND_STEP_S = 0.01


class RemoteEvents:
    def __init__(self, context: zmq.Context, access: RemoteAccess, hwm: int) -> None:
        """``context``: a plain (not asyncio) one: publishing is a synchronous call, as on the bus."""
        self._context = context
        self._access = access
        self._hwm = hwm
        self._socket: zmq.Socket | None = self._new_socket()
        self.endpoint = access.bind(self._socket, "events")
        self._reopening = False
        self._again = False

    def on_event(self, event: Event) -> None:
        """A bus subscriber: every event, as the local subscribers get it."""
        if self._socket is not None:  # None while it is made again: those events come from the store
            self._socket.send_multipart(event.encode())

    async def reopen(self) -> None:
        """Close every connection, then listen again. Asked again meanwhile (another key revoked), it does
        it once more: a connection the new socket took before that revocation is closed too."""
        if self._reopening:
            self._again = True
            return
        self._reopening = True
        try:
            while True:
                self._again = False
                await self._reopen_once()
                if not self._again:
                    return
        finally:
            self._reopening = False

    async def _reopen_once(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        fresh = self._new_socket()
        deadline = time.monotonic() + REBIND_PATIENCE_S
        while True:
            try:
                self._access.bind(fresh, "events")
                break
            except zmq.ZMQError as e:
                if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    fresh.close(linger=0)
                    log.error("cannot listen again for remote web tiers' events", endpoint=self.endpoint,
                              error=str(e))
                    return
                await asyncio.sleep(REBIND_STEP_S)
        self._socket = fresh

    def _new_socket(self) -> zmq.Socket:
        sock = self._context.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
