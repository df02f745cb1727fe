"""What a remote child (workers/executor/remote.py, workers/web/remote.py) shares: the link to its primary from
the environment its host set (workers/remote_host.py), the options of every socket to the primary, and how
the primary's CURVE handshakes say it refuses the key."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Self, TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from cluster.child import CERT_ENV, EXIT_REFUSED, PRIMARY_ENV, die_with_parent
from cluster.config import REMOTE_ENDPOINTS
from cluster.curve import CertError, ClientCert, make_client, tcp_port

FAILED_HANDSHAKES_TO_REFUSE = 3  # a certificate for another primary fails every CURVE handshake
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 2000  # a connect into a cut link is retried soon, not after the kernel's SYN back-off
HANDSHAKE_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

Settings = TypeVar("Settings")


class Refused(Exception):
    """The primary will not have this process: it says why, and it exits without respawning."""


@dataclass(frozen=True)
class RemoteLink:
    primary: str  # tcp://HOST:PORT, the PORT of the primary's --remote-bind (its executor endpoint)
    cert: ClientCert

    @classmethod
    def from_env(cls) -> Self:
        return cls(os.environ[PRIMARY_ENV], ClientCert.load(Path(os.environ[CERT_ENV])))

    def endpoint(self, name: str) -> str:
        host, port = tcp_port(self.primary)
        return f"tcp://{host}:{port + REMOTE_ENDPOINTS.index(name)}"

    def secure(self, socket: zmq.Socket) -> None:
        """ZMQ heartbeats (a silent peer's connection is dropped and remade), a short connect timeout, CURVE."""
        socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        socket.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
        make_client(socket, self.cert)


async def watch_handshakes(monitor: zmq.Socket, cert_name: str, connected: asyncio.Event) -> NoReturn:
    """Read a socket's monitor (made with HANDSHAKE_EVENTS): set ``connected`` on each TCP connect, and raise
    Refused once the primary refuses the key, or every handshake fails (another primary's certificate)."""
    failures = 0
    while True:
        event = await recv_monitor_message(monitor)
        kind = event["event"]
        if kind == zmq.EVENT_CONNECTED:
            connected.set()
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            failures = 0
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise Refused(f"the primary refuses the key {cert_name!r}: unknown or revoked (status {event['value']})")
        else:
            failures += 1
            if failures >= FAILED_HANDSHAKES_TO_REFUSE:
                raise Refused("the CURVE handshake with the primary fails: the certificate is for another "
                              "primary's key, or the address is not a video cluster's --remote-bind port")


def start_remote_child(role: str, settings: Callable[[], Settings]) -> tuple[int, Settings]:
    """A remote child's first steps: Ctrl-C is left to its host, it dies with it, and it reads its link (a
    key file it cannot use ends it with EXIT_REFUSED). Returns its parent's pid and its settings."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the host decides
    parent = die_with_parent()
    try:
        return parent, settings()
    except CertError as e:
        print(f"{role}: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
