"""The primary's door for remote processes (``--remote-bind``): CurveZMQ on every TCP endpoint, keys checked by
a ZAP callback against ``<data-dir>/keys/authorized/``, which is watched so that a key added or revoked with
``run_cluster.py keys`` takes effect at once.

ZMQ never drops a connection that has authenticated; a revoked key is cut off by the application: the
executor pool checks the key of every message (ZAP's User-Id) and refuses those of revoked keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from cluster.config import ClusterConfig
from cluster.curve import make_server
from cluster.logs import get_logger
from primary.keys import KeyStore

log = get_logger()

WATCH_INTERVAL_S = 0.2
# ZMQ heartbeats on TCP: a connection whose peer went silent (a cut link) is dropped and remade
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class RemoteAccess:
    def __init__(self, context: zmq.asyncio.Context, config: ClusterConfig) -> None:
        self._config = config
        self._keys = KeyStore(config.data_dir)
        self._server = self._keys.server_keys()  # no keys, no TCP: made here on first use
        self._authorised = self._keys.authorised()
        # on the sockets' own context, before any TCP bind: without a ZAP handler CURVE lets every key in
        self._auth = AsyncioAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self)
        self.on_revoked: Callable[[set[str]], None] = lambda keys: None

    @property
    def server_public(self) -> str:
        return self._server.public

    def callback(self, _domain: str, key: bytes) -> bool:
        """ZAP: may this client key connect? A key not known yet may have been added a moment ago: look."""
        text = key.decode("ascii", "replace")
        if text not in self._authorised:
            self._refresh()
        return text in self._authorised

    def authorised(self, key: str) -> bool:
        return key in self._authorised

    def bind(self, socket: zmq.Socket, name: str) -> str:
        """Also bind this socket on its TCP endpoint, as a CURVE server (its ipc endpoints stay as they are)."""
        socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        make_server(socket, self._server)
        endpoint = self._config.remote_endpoint(name)
        socket.bind(endpoint)
        return endpoint

    async def watch(self) -> None:
        """Follow the keys directory; a revoked key's processes are cut off at once."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self._refresh()

    def _refresh(self) -> None:
        current = self._keys.authorised()
        if current == self._authorised:
            return
        revoked = set(self._authorised) - set(current)
        for key in set(current) - set(self._authorised):
            log.info("key authorised", name=current[key])
        for key in revoked:
            log.warning("key revoked: cutting its processes off", name=self._authorised[key])
        self._authorised = current
        if revoked:
            self.on_revoked(revoked)

    def close(self) -> None:
        self._auth.stop()
