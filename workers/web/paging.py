"""Paging of every list route: ``?limit=&before=`` in, a bare JSON array out, and when more follows
``X-Next-Cursor`` (the cursor to pass as ``?before=``) and ``Link: <...>; rel="next"`` (the next page's URL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse

from workers.web import request_body
from workers.web.errors import ApiError

MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 300


def limit(request: Request) -> int:
    value = request_body.ascii_int(request.query_params.get("limit", "100"), 4)
    if value is None or not 0 < value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}")
    return value


def before(request: Request) -> str | None:
    """The cursor of a list's next page, as the previous page's X-Next-Cursor gave it."""
    cursor = request.query_params.get("before")
    if cursor is not None and not 0 < len(cursor) <= MAX_CURSOR_CHARS:
        raise ApiError(400, "before must be the X-Next-Cursor of the previous page")
    return cursor


def page(request: Request, items: list[Any], next_cursor: str | None) -> JSONResponse:
    headers = {}
    if next_cursor:
        query = {**request.query_params, "before": next_cursor}
        headers = {"X-Next-Cursor": next_cursor, "Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}
    return JSONResponse(items, headers=headers)
