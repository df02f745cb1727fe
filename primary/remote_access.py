"""The primary's door for remote processes (``--remote-bind``): CurveZMQ on every TCP endpoint, keys checked by
a ZAP callback against ``<data-dir>/keys/authorized/``, which is watched so that a key added or revoked with
``run_cluster.py keys`` takes effect at once.

ZAP runs only at a connection's handshake, and ZMQ never drops a connection that has authenticated: a revoked
key is cut off by the application. The executor and control sockets check the key of every message (ZAP's
User-Id) and refuse those of revoked keys; so does the log socket (it drops their lines). The event socket,
which cannot check what it sends, is closed and made again (primary/remote_events.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from cluster.config import ClusterConfig
from cluster.curve import make_server
from cluster.logs import get_logger
from primary.keys import KeyStore

log = get_logger()

WATCH_INTERVAL_S = 0.2  # one stat() of the keys directory each time; it is read only when it changed
FULL_READ_INTERVAL_S = 10.0  # and read anyway now and then: a key file edited in place leaves the dir's mtime
# a file system's clock ticks coarsely (a few ms): a change made within the tick of the stamp we took leaves the
# same stamp, so a stamp this recent is not trusted (read again) until it is older
RACY_STAMP_NS = 1_000_000_000
UNTRUSTED = (-1, -1)  # a stamp no directory has
# ZMQ heartbeats on TCP: a connection whose peer went silent (a cut link) is dropped and remade
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class RemoteAccess:
    def __init__(self, context: zmq.asyncio.Context, config: ClusterConfig) -> None:
        self._config = config
        self._keys = KeyStore(config.data_dir)
        self._server = self._keys.server_keys()  # no keys, no TCP: made here on first use
        self._stamp = UNTRUSTED  # the watcher's first look reads again, with a stamp taken before it reads
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
        """ZAP: may this client key connect? A key not known yet may have been added a moment ago: look, if the
        directory changed (a stranger's every handshake costs one stat(), not a read of every key)."""
        text = key.decode("ascii", "replace")
        if text not in self._authorised and self._dir_stamp() != self._stamp:
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

    async def forward_logs(self, pull: zmq.asyncio.Socket, publish: Callable[[bytes], None]) -> None:
        """The log lines of remote processes, but not of a process whose key was revoked since it connected."""
        while True:
            frame = await pull.recv(copy=False)
            try:
                key = str(frame.get("User-Id"))
            except zmq.ZMQError:
                continue
            if key in self._authorised:
                publish(frame.bytes)

    async def watch(self) -> None:
        """Follow the keys directory; a revoked key's processes are cut off at once."""
        last_full_read = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            stamp = self._dir_stamp()
            if stamp != self._stamp or time.monotonic() - last_full_read > FULL_READ_INTERVAL_S:
                last_full_read = time.monotonic()
                self._refresh()

    def _dir_stamp(self) -> tuple[int, int] | None:
        """Adding or revoking a key creates, renames or removes a file: the directory's mtime moves."""
        try:
            info = self._keys.authorized_dir.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_ino

    def _refresh(self) -> None:
        stamp = self._dir_stamp()  # before reading: a change while we read is seen next time
        current = self._keys.authorised()
        self._stamp = stamp if stamp is None or time.time_ns() - stamp[0] > RACY_STAMP_NS else UNTRUSTED
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
