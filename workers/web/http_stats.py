"""Counts of HTTP requests by route and status, reported to the primary with each heartbeat."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.routing import Match


def count_response(counts: Counter[tuple[str, str, int]], scope: Any, status: int) -> None:
    """By route template, not raw path: bounded label values."""
    counts[(scope["method"], _route(scope), status)] += 1


def _route(scope: Any) -> str:
    routed = scope.get("route")  # the router's pick, when the request got that far: no match again
    if routed is not None and scope["method"] in (getattr(routed, "methods", None) or (scope["method"],)):
        return _label(routed)  # the router picks a route whose methods miss this one only for a 405
    router = scope["app"].router if "app" in scope else None  # refused by a middleware first, or a 405
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _label(route)
    return "other"


def _label(route: Any) -> str:
    return getattr(route, "path", "") or "static"
