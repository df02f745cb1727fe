"""The HTTP listening socket, bound once by the primary and inherited by every web worker."""

from __future__ import annotations

import errno
import socket
import time

BACKLOG = 2048
BIND_PATIENCE_S = 10.0


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets whose proto says TCP,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        _bind_patiently(sock, (host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def _bind_patiently(sock: socket.socket, address: tuple[str, int]) -> None:
    """Wait out the web workers of a primary that was just killed: they exit by themselves."""
    deadline = time.monotonic() + BIND_PATIENCE_S
    while True:
        try:
            sock.bind(address)
            return
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
