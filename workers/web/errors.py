"""JSON errors with exact status codes: ``{"error": message}``. Anything unforeseen is a 500 whose
traceback goes to the log only: the client learns nothing of the server's insides."""

from __future__ import annotations

import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster.jobspec import InvalidJob
from cluster.logs import get_logger
from workers.web.rpc import RpcError

log = get_logger()


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def too_many(message: str, retry_after_s: float) -> ApiError:
    """429 with ``Retry-After``, in whole seconds (at least 1, rounded up: never back too early)."""
    seconds = max(1, math.ceil(retry_after_s))
    return ApiError(429, f"{message}: try again in {seconds} s", headers={"Retry-After": str(seconds)})


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(getattr(exc, "status", 500), str(exc), getattr(exc, "headers", None))


async def invalid_job(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(400, str(exc))


async def http_error(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(getattr(exc, "status_code", 500), str(getattr(exc, "detail", exc)))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette re-raises after this answer, so uvicorn logs the traceback as well."""
    log.error("request failed", path=request.url.path, error=type(exc).__name__)
    return _json_error(500, "internal error")


EXCEPTION_HANDLERS = {ApiError: api_error, RpcError: api_error, InvalidJob: invalid_job, HTTPException: http_error,
                      Exception: unexpected_error}
