"""Slow clients: a connection whose request head does not arrive in time is closed.

uvicorn times out an idle keep-alive connection but not one that sends half a request line or a header a
minute: such a connection would be held for good. The timer runs from the connection (or the start of each
next request) until the end of the headers; the body has its own idle limit (``request_body.idle_limited``).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # a pipelined request waits behind one still being answered: not its fault
        elif not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout_s: float) -> Any:
    """For ``uvicorn.Config(http=...)``: httptools, with the header timeout."""
    return functools.partial(HeaderTimeoutProtocol, header_timeout_s=header_timeout_s)
