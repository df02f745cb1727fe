"""Sessions on the web side: the token from the cookie or ``Authorization: Bearer``, resolved by the
primary and cached until a session event ends it; login checks the password here, in a thread, off the
primary's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from cluster.passwords import MIN_PASSWORD_LENGTH, hash_password, token_hash, verify_password
from workers.web.client_ip import client_ip, is_https
from workers.web.errors import ApiError, too_many
from workers.web.rpc import ControlClient, RpcError

COOKIE = "token"
SESSION_CACHE_S = 5.0  # a safety net only: session events from the primary end a cached session at once
MAX_CACHED = 10_000
MAX_NAME_LENGTH = 64


class SessionCache:
    """Sessions resolved by the primary, kept by token hash until a session event says they ended or their
    user changed. A cached session is trusted only while the event feed is up to date (no event is waiting
    that could be its end), else the primary is asked again."""

    def __init__(self, rpc: ControlClient, up_to_date: Callable[[], bool]) -> None:
        self._rpc = rpc
        self._up_to_date = up_to_date
        self._users: dict[str, tuple[float, dict[str, Any]]] = {}  # token hash -> (fetched at, user)
        self._by_user: dict[str, set[str]] = {}  # user id -> its cached token hashes
        self._changes = 0  # counts invalidations: a lookup that overlapped one is not cached
        self._thawed = False

    def distrust_all(self) -> None:
        """The process was stopped (SIGSTOP) and goes on: its ZeroMQ I/O thread was stopped too, so the session
        events that came meanwhile may still sit unread in the kernel, where ``up_to_date`` cannot see them.
        Safe in a signal handler: the next lookup empties the cache."""
        self._thawed = True

    async def user(self, token: str) -> dict[str, Any]:
        if self._thawed:
            self._thawed = False
            self.forget_all()
        key = token_hash(token)
        cached = self._users.get(key)
        if cached and time.monotonic() - cached[0] < SESSION_CACHE_S and self._up_to_date():
            return cached[1]
        changes = self._changes
        user = await self._rpc.call("session", token=token)
        if changes == self._changes:
            self._remember(key, user)
        return user

    @property
    def changes(self) -> int:
        """Grows with every session event applied: a caller can tell whether one came while it waited."""
        return self._changes

    def forget(self, token: str) -> None:
        self.end([token_hash(token)])

    def end(self, token_hashes: Iterable[str]) -> None:
        self._changes += 1
        for key in token_hashes:
            cached = self._users.pop(key, None)
            if cached:
                self._by_user.get(str(cached[1]["userId"]), set()).discard(key)

    def forget_all(self) -> None:
        self._changes += 1
        self._users.clear()
        self._by_user.clear()

    def user_changed(self, user_id: str) -> None:
        self._changes += 1
        for key in self._by_user.pop(user_id, set()):
            self._users.pop(key, None)

    def _remember(self, key: str, user: dict[str, Any]) -> None:
        if len(self._users) >= MAX_CACHED:
            self._users.clear()
            self._by_user.clear()
        self._users[key] = (time.monotonic(), user)
        self._by_user.setdefault(str(user["userId"]), set()).add(key)


async def user_call(request: Request, op: str, **args: Any) -> Any:
    """An RPC on behalf of the logged-in user (``require_session`` put it there); the primary checks ownership."""
    return await request.app.state.worker.rpc.call(op, user=request.state.user, **args)


async def admit(request: Request, kind: str) -> None:
    """The primary's rate limit for this user and address (it holds across the web workers); 429 past it."""
    answer = await user_call(request, "admit", kind=kind, ip=client_ip(request))
    if not answer["allowed"]:
        raise too_many(f"too many {kind} requests", answer["retryAfter"])


def session_token(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return connection.cookies.get(COOKIE)


async def current_user(connection: HTTPConnection) -> dict[str, Any]:
    """The logged-in user (``{"userId", "username", "name", "admin"}``), or 401."""
    token = session_token(connection)
    if not token:
        raise ApiError(401, "not logged in")
    try:
        return await connection.app.state.worker.sessions.user(token)
    except RpcError as e:
        raise ApiError(e.status, str(e)) from e


async def login(request: Request, body: dict[str, Any]) -> Response:
    rpc: ControlClient = request.app.state.worker.rpc
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise ApiError(400, "username and password are required")
    if len(username) > MAX_NAME_LENGTH:
        raise ApiError(400, f"a user name has at most {MAX_NAME_LENGTH} characters")
    ip = client_ip(request)
    check = await rpc.call("login_check", username=username, ip=ip)
    if not check["allowed"]:
        raise too_many("too many login attempts", check["retryAfter"])
    ok = await asyncio.to_thread(verify_password, password, check["passwordHash"])
    session = await rpc.call("login_done", username=username, ip=ip, ok=ok and bool(check["userId"]),
                             userId=check["userId"])
    response = JSONResponse({"token": session["token"], "expiresAt": session["expiresAt"], "user": session["user"]})
    max_age = max(0, int((session["expiresAt"] / 1000) - time.time()))
    response.set_cookie(COOKIE, session["token"], max_age=max_age, httponly=True, samesite="lax", path="/",
                        secure=is_https(request.scope))
    return response


async def logout(request: Request) -> Response:
    token = session_token(request) or ""
    await request.app.state.worker.rpc.call("logout", token=token)
    request.app.state.worker.sessions.forget(token)
    response = JSONResponse({"loggedOut": True})
    response.delete_cookie(COOKIE, path="/")
    return response


async def update_user(request: Request, body: dict[str, Any]) -> Response:
    """``name`` is the display name (the login name never changes); a new ``password`` ends the user's
    other sessions, this one stays."""
    user = request.state.user
    token = session_token(request) or ""
    changes: dict[str, Any] = {"tokenHash": token_hash(token)}
    if "name" in body:
        if not isinstance(body["name"], str):
            raise ApiError(400, "name must be a string")
        changes["name"] = body["name"]
    if "password" in body:
        password = body["password"]
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise ApiError(400, f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        changes["passwordHash"] = await asyncio.to_thread(hash_password, password)
    if len(changes) == 1:
        raise ApiError(400, "nothing to change: give name and/or password")
    updated = await request.app.state.worker.rpc.call("update_user", user=user, **changes)
    request.app.state.worker.sessions.forget(token)
    return JSONResponse(updated)


PUBLIC_PATHS = frozenset({"/api/login", "/api/health"})
PROTECTED_PREFIXES = ("/api/", "/get-video-asset", "/hls/")


async def require_session(scope: Any) -> None:
    """Every API route, asset and HLS file needs a session (ApiError 401 first, before the body is read);
    the user is left in ``scope["state"]["user"]`` for the route."""
    if _protected(scope["path"]):
        scope.setdefault("state", {})["user"] = await current_user(HTTPConnection(scope))


def _protected(path: str) -> bool:
    return path not in PUBLIC_PATHS and path.startswith(PROTECTED_PREFIXES)
