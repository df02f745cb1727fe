"""Counts of HTTP requests by route and status, reported to the primary with each heartbeat."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.routing import Match


class RequestStats:
    """ASGI middleware: counts each response by route template (not raw path: bounded label values)."""

    def __init__(self, app: Any, counts: Counter[tuple[str, str, int]]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def remember_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            self.counts[(scope["method"], _route(scope), status)] += 1


def _route(scope: Any) -> str:
    routed = scope.get("route")  # the router's pick, when the request got that far: one match, not every route's
    if routed is not None and routed.matches(scope)[0] is Match.FULL:
        return _label(routed)
    router = scope["app"].router if "app" in scope else None  # refused by a middleware first, or a 405
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _label(route)
    return "other"


def _label(route: Any) -> str:
    return getattr(route, "path", "") or "static"
