"""Counts of HTTP requests by route and status, reported to the primary with each heartbeat."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.routing import Match


def count_response(counts: Counter[tuple[str, str, int]], scope: Any, status: int) -> None:
    """By route template, not raw path: bounded label values."""
    counts[(scope["method"], _route(scope), status)] += 1


def _route(scope: Any) -> str:
    routed = scope.get("route")  # the router's pick, when the request got that far: not matched again
    methods = getattr(routed, "methods", None)  # a Mount has none
    if routed is not None and (methods is None or scope["method"] in methods):  # else a 405: "other"
        return _label(routed)
    router = scope["app"].router if "app" in scope else None  # refused by the front door first, or a 405
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return _label(route)
    return "other"


def _label(route: Any) -> str:
    return getattr(route, "path", "") or "static"
