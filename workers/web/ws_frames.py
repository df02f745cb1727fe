"""One WebSocket frame per event, written to every client's socket as is.

Going through ASGI costs every client an encode and a trip through the server's send path; an event
fanned out to a thousand clients is the same bytes a thousand times. uvicorn's protocol is extended
to leave a writer in the scope, and the hub writes the frame it built once to each transport.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXTENSION = "video-cluster.frame-writer"
MAX_BUFFERED_BYTES = 1 << 20  # a client this far behind is dropped (it can resume)


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame (servers never mask)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


class FrameWriter:
    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """False when the connection is not open or the client is too far behind."""
        protocol = self._protocol
        transport = protocol.transport
        if protocol.conn.state is not State.OPEN or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            return False
        transport.write(frame)
        return True


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with a FrameWriter in each connection's scope."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self.scope["extensions"][EXTENSION] = FrameWriter(self)  # the app task has not run yet


def frame_writer(scope: dict[str, Any]) -> FrameWriter:
    """The connection's writer; the web worker always serves with FrameWriterProtocol."""
    try:
        return scope["extensions"][EXTENSION]
    except KeyError as e:
        raise RuntimeError("the WebSocket protocol must be FrameWriterProtocol") from e
