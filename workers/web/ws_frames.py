"""The server's side of a WebSocket connection after the handshake: frames straight to the socket, messages to
a listener, and no task, queue or event of its own while the connection is idle.

Going through ASGI costs every client an encode and a trip through the server's send path; an event
fanned out to a thousand clients is the same bytes a thousand times. uvicorn's protocol is extended to
leave a FrameWriter in the scope, and the hub writes the frame it built once to each transport.

ASGI also keeps one task per connection for its whole life, awaiting the next message through the
middleware stack (22 coroutines), with an asyncio.Queue and Events (each a deque of 600 bytes) and the
handshake's request, response and scope: about 20 KB per idle connection. The app therefore runs the
handshake through ASGI as usual (Origin check, login, limits, denial answers, accept), then calls
``FrameWriter.listen``: its task ends, and from then on each text message goes to the listener (one at a
time, in a short task of its own) and the connection's end to ``on_closed``. uvicorn's protocol still
parses frames, answers pings, sends keepalive pings and runs the closing handshake.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Protocol

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from cluster.logs import get_logger

EXTENSION = "video-cluster.frame-writer"
MAX_BUFFERED_BYTES = 1 << 20  # a client this far behind is dropped (it can resume)
CLOSE_UNSUPPORTED_DATA = 1003  # a binary message: the protocol is JSON text
CLOSE_INTERNAL_ERROR = 1011

log = get_logger()


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


class Listener(Protocol):
    async def on_text(self, text: str) -> None: ...

    def on_closed(self) -> None: ...


class FrameWriter:
    """The app's handle on one connection. Until ``listen`` the ASGI task reads the messages; after it, the
    listener hears them here (uvicorn's protocol puts them into what it takes for its queue: this object)."""

    __slots__ = ("_closed", "_inbox", "_listener", "_protocol", "_reader")

    def __init__(self, protocol: FrameWriterProtocol) -> None:
        self._protocol = protocol
        self._listener: Listener | None = None
        self._inbox: list[str | bytes] = []  # messages not yet handled, in order
        self._reader: asyncio.Task[None] | None = None  # while there are messages to handle
        self._closed = False

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

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake now (a close before the accept is sent right after it)."""
        self._protocol.close_now(code, reason)

    def listen(self, listener: Listener) -> None:
        """The ASGI task may end now: the messages it has not read, and all that follow, go to ``listener``."""
        protocol = self._protocol
        queued: asyncio.Queue[Any] = protocol.queue
        self._listener = listener
        protocol.detach(self)
        while not queued.empty():
            self.put_nowait(queued.get_nowait())

    def put_nowait(self, message: dict[str, Any]) -> None:
        """What uvicorn's protocol hands its app: a message, or the connection's end (perhaps more than once)."""
        if self._closed:
            return
        if message["type"] == "websocket.disconnect":
            self._closed = True
            self._inbox.clear()
            assert self._listener is not None
            self._listener.on_closed()
        else:
            self._inbox.append(message["text"] if "text" in message else message["bytes"])
            if self._reader is None:
                self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        """One message at a time, in order; uvicorn paused reading on the first one, this resumes it."""
        assert self._listener is not None
        try:
            while self._inbox and not self._closed:
                message = self._inbox.pop(0)
                if isinstance(message, bytes):
                    self.close(CLOSE_UNSUPPORTED_DATA, "text messages only")
                    break
                await self._listener.on_text(message)
        except Exception as e:  # noqa: BLE001 - a bug in a handler ends its connection, never the worker
            log.error("websocket message failed", error=f"{type(e).__name__}: {e}")
            self.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._reader = None
            self._protocol.resume_reading_if_paused()


class _NeverBlocks:
    """Stands for the protocol's ``writable`` event once the app writes through FrameWriter, which checks the
    transport's buffer itself: nothing waits on it, and one shared object costs no connection a deque."""

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def is_set(self) -> bool:
        return True

    async def wait(self) -> bool:
        return True


NEVER_BLOCKS = _NeverBlocks()


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with a FrameWriter in each connection's scope, which lets the
    app's task end once it listens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writer: FrameWriter | None = None
        self.detached = False
        self.close_after_accept: tuple[int, str] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The scope has its copy of the headers. websockets' parser keeps the request in a local variable of its
        # generator for the connection's whole life: without its headers it holds some 60 bytes, not 2.5 KB.
        event.headers.clear()
        if self.handshake_initiated and not self.close_sent:  # else refused by the handshake check, and closed
            self.writer = FrameWriter(self)
            self.scope["extensions"][EXTENSION] = self.writer  # the app task has not run yet

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.close_after_accept is not None:
            self.close_now(*self.close_after_accept)

    def detach(self, queue: FrameWriter) -> None:
        """The app's task ends and the handshake's objects go; messages go to ``queue.put_nowait``."""
        self.detached = True
        self.queue = queue  # type: ignore[assignment]
        self.writable = NEVER_BLOCKS  # type: ignore[assignment]
        self.request = self.response = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]

    def close_now(self, code: int, reason: str) -> None:
        """uvicorn's answer to ``websocket.close``, without a task to send it."""
        if not self.handshake_complete:
            self.close_after_accept = (code, reason)
            return
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.resume_reading_if_paused()  # to read the peer's close frame
        # abort, not close: close() would wait for the buffer to drain, forever for a peer that reads nothing
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def keepalive_timeout(self) -> None:
        """uvicorn's, then the connection goes at once: a peer that answers no ping reads nothing either, and
        what is buffered for it (up to MAX_BUFFERED_BYTES) would wait for it for good."""
        closing = self.close_sent or self.transport.is_closing()
        super().keepalive_timeout()
        if not closing:
            self.transport.abort()

    def resume_reading_if_paused(self) -> None:
        if self.read_paused and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    async def run_asgi(self) -> None:
        """uvicorn's, except that the connection stays open when the app returns after ``listen``."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None and not self.detached:
            self.transport.close()


def frame_writer(scope: dict[str, Any]) -> FrameWriter:
    """The connection's writer; the web worker always serves with FrameWriterProtocol."""
    try:
        return scope["extensions"][EXTENSION]
    except KeyError as e:
        raise RuntimeError("the WebSocket protocol must be FrameWriterProtocol") from e
