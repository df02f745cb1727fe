"""What every request passes before its route, in one ASGI layer: each layer of its own would wrap ``send``
again and cost every request a coroutine more (about 5 µs a layer, on a path of ~300 µs a submission).

In order: the forwarding headers of a trusted proxy; for HTTP, the CSRF rules (403) and the session (401);
on the way out, the security headers, ``Connection: close`` while the worker drains, and a count of the
response by route and status."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from workers.web.auth import require_session
from workers.web.client_ip import TrustedProxies, believe_forwarded
from workers.web.csrf import allowed_origins, request_problem
from workers.web.draining import CLOSE_CONNECTION
from workers.web.errors import ApiError
from workers.web.http_stats import count_response
from workers.web.security_headers import with_security_headers


class FrontDoor:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state  # WorkerState: its config, its draining flag, its request counts
        self.proxies = TrustedProxies(state.config.forwarded_allow_ips)
        self.allowed = allowed_origins(state.config.allowed_origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            believe_forwarded(scope, self.proxies)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_response(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = with_security_headers(message.get("headers", []))
                if self.state.draining:
                    headers.append(CLOSE_CONNECTION)
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = await self._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, send_response)
            else:
                await refusal(scope, receive, send_response)
        finally:
            count_response(self.state.requests, scope, status)

    async def _refusal(self, scope: Any) -> JSONResponse | None:
        problem = request_problem(scope, self.allowed)
        if problem:
            return JSONResponse({"error": problem}, status_code=403)
        try:
            await require_session(scope)
        except ApiError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return None
