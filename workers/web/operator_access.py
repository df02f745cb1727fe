"""Who may see the cluster's inner figures (process ids, memory, queue counts): an administrator's
session, or the ``--metrics-token`` as ``Authorization: Bearer`` (for a scraper, which has no login)."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from workers.web.auth import current_user, session_token
from workers.web.errors import ApiError


async def is_operator(connection: HTTPConnection) -> bool:
    token = session_token(connection)
    if not token:
        return False
    metrics_token = connection.app.state.worker.config.metrics_token
    if metrics_token and hmac.compare_digest(token.encode(), metrics_token.encode()):
        return True
    try:
        user = await current_user(connection)
    except ApiError:
        return False
    return bool(user.get("admin"))


async def require_operator(connection: HTTPConnection) -> None:
    """401 without a credential, 403 with one that is not an administrator's nor the metrics token."""
    if not await is_operator(connection):
        if session_token(connection):
            raise ApiError(403, "only an administrator (or the metrics token) may see this")
        raise ApiError(401, "not logged in: log in as an administrator or send the metrics token")
