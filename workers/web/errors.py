"""JSON errors with exact status codes: ``{"error": message}``."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster.jobspec import InvalidJob
from workers.web.rpc import RpcError


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def api_error(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(getattr(exc, "status", 500), str(exc))


async def invalid_job(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(400, str(exc))


async def http_error(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(getattr(exc, "status_code", 500), str(getattr(exc, "detail", exc)))


EXCEPTION_HANDLERS = {ApiError: api_error, RpcError: api_error, InvalidJob: invalid_job, HTTPException: http_error}
