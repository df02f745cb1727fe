"""A lean WebSocket client for the fan-out benchmark: RFC 6455 framing on an asyncio Protocol.

A thousand connections held by Python processes on the same 2 cores as the cluster: with a full client
library, reading the frames costs more than the server's fan-out that is measured. This one reads
frames as bytes and hands each text payload to a callback.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

HANDSHAKE_END = b"\r\n\r\n"


class LeanWebSocket(asyncio.Protocol):
    def __init__(self, on_text: Callable[[bytes], None]) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._handshaken:
            end = self._buffer.find(HANDSHAKE_END)
            if end < 0:
                return
            status = bytes(self._buffer[:self._buffer.find(b"\r\n")])
            del self._buffer[:end + len(HANDSHAKE_END)]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self._handshaken = True
            self.opened.set_result(None)
        self._read_frames()

    def _read_frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset:offset + length])
            del buffer[:offset + length]
            if opcode == 0x1:
                self.on_text(payload)
            elif opcode == 0x9:  # the server's keepalive ping: a connection that never answers is closed
                self._send(0xA, payload)
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        """Clients mask what they send."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        first = 0x80 | opcode
        header = struct.pack("!BB", first, 0x80 | length) if length < 126 else struct.pack("!BBH", first, 0xFE, length)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(header + mask + masked)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(url: str, headers: dict[str, str], on_text: Callable[[bytes], None]) -> LeanWebSocket:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(lambda: LeanWebSocket(on_text), parts.hostname,
                                                        parts.port or 80)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *(f"{name}: {value}" for name, value in headers.items())]
    assert protocol.transport is not None
    protocol.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await protocol.opened
    return protocol
