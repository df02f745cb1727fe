"""Cross-site request forgery: a page elsewhere must not act with a user's cookie.

A state-changing request (POST, PUT, PATCH, DELETE) passes when
- its body, if it has one, is ``application/json`` (the upload excepted: a raw body, any type), which a
  cross-site form or a "simple" ``fetch`` cannot send without a CORS preflight this server never grants; and
- its ``Origin`` (or, without one, its ``Referer``) is the cluster itself (scheme, host and port of the
  request's ``Host``, or a trusted proxy's ``X-Forwarded-Host``/``-Proto``) or one of ``--allowed-origins``.
Without either header (curl, scripts) it passes when it carries no ambient credential: a Bearer token, no
credential at all (401 follows), or a login. A cookie without an Origin is refused. The WebSocket upgrade
is checked the same way (``websocket_problem``), since a browser sends the cookie to any ``ws://`` URL.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from cluster.logs import clip
from workers.web.auth import COOKIE
from workers.web.client_ip import normalize_origin, own_origin

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RAW_BODY_PATHS = frozenset({"/api/upload-video"})
LOGIN_PATH = "/api/login"


@functools.lru_cache(maxsize=8)
def allowed_origins(spec: str) -> frozenset[str]:
    return frozenset(normalize_origin(item) for item in spec.split(",") if item.strip())


def request_problem(scope: Any, allowed: frozenset[str]) -> str | None:
    """Why an HTTP request fails the rules above (403), or None."""
    if scope["method"] not in STATE_CHANGING:
        return None
    headers = Headers(scope=scope)
    if _has_body(headers) and scope["path"] not in RAW_BODY_PATHS and not _is_json(headers):
        return "a request body must be sent as content-type: application/json"
    return _origin_problem(scope, headers, allowed, login=scope["path"] == LOGIN_PATH)


def websocket_problem(connection: HTTPConnection) -> str | None:
    """For the ``/ws`` upgrade, before it is accepted."""
    allowed = allowed_origins(connection.app.state.worker.config.allowed_origins)
    return _origin_problem(connection.scope, connection.headers, allowed, login=False)


def _origin_problem(scope: Any, headers: Headers, allowed: frozenset[str], login: bool) -> str | None:
    origin = headers.get("origin") or headers.get("referer")
    if origin is not None:
        normalized = normalize_origin(origin)
        if normalized == own_origin(scope) or normalized in allowed:
            return None
        return f"cross-site request refused: {clip(origin)} is not this cluster's origin nor an allowed one"
    if _bearer(headers) or login or COOKIE not in HTTPConnection(scope).cookies:
        return None  # no ambient credential rides along: nothing to forge
    return "a request with the session cookie needs an Origin or Referer header"


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


def _is_json(headers: Headers) -> bool:
    return headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def _bearer(headers: Headers) -> bool:
    return headers.get("authorization", "").lower().startswith("bearer ")
