"""The webhook routes: create, list, show, delete, and a webhook's deliveries (newest first, by cursor).

The primary owns webhooks and checks who may see which; these routes check the shape of the input.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from workers.web.errors import ApiError

MAX_BODY_BYTES = 16 * 1024
MAX_ID_LENGTH = 64


async def create_webhook(request: Request) -> JSONResponse:
    body = await _json_object(request)
    url, events = body.get("url"), body.get("events")
    if not isinstance(url, str) or not url:
        raise ApiError(400, "url is required")
    if not isinstance(events, list):
        raise ApiError(400, "events must be a list of event names or prefixes such as 'job:'")
    created = await _call(request, "create_webhook", url=url, events=events)
    return JSONResponse(created, status_code=201)


async def list_webhooks(request: Request) -> JSONResponse:
    return JSONResponse(await _call(request, "list_webhooks"))


async def get_webhook(request: Request) -> JSONResponse:
    return JSONResponse(await _call(request, "get_webhook", webhookId=_webhook_id(request)))


async def delete_webhook(request: Request) -> JSONResponse:
    return JSONResponse(await _call(request, "delete_webhook", webhookId=_webhook_id(request)))


async def list_deliveries(request: Request) -> JSONResponse:
    q = request.query_params
    limit = _whole_number(q.get("limit", "50"), "limit")
    before = _whole_number(q["before"], "before") if "before" in q else None
    if not 0 < limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    deliveries = await _call(request, "webhook_deliveries", webhookId=_webhook_id(request), limit=limit,
                             before=before)
    return JSONResponse(deliveries)


def _webhook_id(request: Request) -> str:
    webhook_id = request.path_params["webhook_id"]
    if not webhook_id.isalnum() or len(webhook_id) > MAX_ID_LENGTH:
        raise ApiError(404, f"webhook {webhook_id[:MAX_ID_LENGTH]} not found")
    return webhook_id


def _whole_number(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, f"{name} must be a whole number")
    return int(text)


async def _call(request: Request, op: str, **args: Any) -> Any:
    return await request.app.state.worker.rpc.call(op, user=request.state.user, **args)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"JSON body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ApiError(400, "the body is not valid JSON") from e
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
