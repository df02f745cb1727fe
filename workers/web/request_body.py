"""Request bodies read with bounds: size, idleness, and for JSON its depth, its numbers and its strings.

A malformed body is a 400 with a short message of our own: never the parser's or the codec's text, and
never a 500 (Python's int parser raises ValueError past 4,300 digits, the C scanner RecursionError when
nested too deep, and a lone surrogate passes json.loads only to fail later, when it is encoded).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from workers.web.errors import ApiError

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 32
MAX_DECLARED_DIGITS = 18  # a Content-Length past this is larger than any limit anyway
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadJson(ValueError):
    """The text is not JSON this cluster takes; the message is safe to show."""


def loads(text: str | bytes) -> Any:
    """``json.loads`` with bounds, for HTTP bodies and WebSocket messages alike; BadJson when refused."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadJson("the body is not UTF-8") from e
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise BadJson("the body is not valid JSON") from e
    _check_shape(value)
    return value


def ascii_int(text: str | None, max_digits: int = 9) -> int | None:
    """The number a string of ASCII digits spells, else None (``str.isdigit`` also takes '²' and '٣')."""
    if not text or len(text) > max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


async def idle_limited(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; 408 (and the connection closed) when nothing arrives for ``idle_s``."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_s):  # not wait_for: it makes a task of each chunk
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as e:
            # the rest of the body may still come: the connection cannot serve another request
            raise ApiError(408, f"the body stalled: nothing arrived for {idle_s:g} s",
                           headers={"Connection": "close"}) from e
        yield chunk


def declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    length = ascii_int(declared.strip(), MAX_DECLARED_DIGITS)
    if length is None:
        raise ApiError(400, "Content-Length must be a number of bytes")
    return length


async def limited_body(request: Request, max_bytes: int, idle_s: float) -> bytes:
    """The body, refused with 413 past ``max_bytes``: by its declared length before any of it is read."""
    declared = declared_length(request)
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"JSON body larger than {max_bytes / 1024:g} KiB")
    chunks, size = [], 0
    async for chunk in idle_limited(request, idle_s):
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"JSON body larger than {max_bytes / 1024:g} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, max_bytes: int, idle_s: float) -> dict[str, Any]:
    raw = await limited_body(request, max_bytes, idle_s)
    try:
        body = loads(raw) if raw else {}
    except BadJson as e:
        raise ApiError(400, str(e)) from e
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson("number too long")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson("number too long")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJson("number out of range")
    return value


def _constant(_name: str) -> Any:
    raise BadJson("NaN and Infinity are not JSON")


def _check_shape(value: Any) -> None:
    """At most MAX_DEPTH levels, and no string (key or value) that UTF-8 cannot encode."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise BadJson("strings must be valid Unicode (no lone surrogates)")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise BadJson(f"JSON nested deeper than {MAX_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


async def api_json(request: Request) -> dict[str, Any]:
    """A route's JSON object body, within the worker's ``--max-json-body-kb`` and ``--upload-idle-s``."""
    config = request.app.state.worker.config
    return await json_object(request, config.max_json_body_kb * 1024, config.upload_idle_s)
