"""The webhook routes: create, list, show, delete, and a webhook's deliveries (newest first, by cursor).

The primary owns webhooks and checks who may see which; these routes check the shape of the input.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from workers.web import request_body
from workers.web.auth import user_call
from workers.web.errors import ApiError

MAX_CURSOR_DIGITS = 18
MAX_ID_LENGTH = 64


async def create_webhook(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    url, events = body.get("url"), body.get("events")
    if not isinstance(url, str) or not url:
        raise ApiError(400, "url is required")
    if not isinstance(events, list):
        raise ApiError(400, "events must be a list of event names or prefixes such as 'job:'")
    created = await user_call(request, "create_webhook", url=url, events=events)
    return JSONResponse(created, status_code=201)


async def list_webhooks(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "list_webhooks"))


async def get_webhook(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "get_webhook", webhookId=_webhook_id(request)))


async def delete_webhook(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "delete_webhook", webhookId=_webhook_id(request)))


async def list_deliveries(request: Request) -> JSONResponse:
    q = request.query_params
    limit = _whole_number(q.get("limit", "50"), "limit")
    before = _whole_number(q["before"], "before") if "before" in q else None
    if not 0 < limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    deliveries = await user_call(request, "webhook_deliveries", webhookId=_webhook_id(request), limit=limit,
                             before=before)
    return JSONResponse(deliveries)


def _webhook_id(request: Request) -> str:
    webhook_id = request.path_params["webhook_id"]
    if not webhook_id.isalnum() or len(webhook_id) > MAX_ID_LENGTH:
        raise ApiError(404, f"webhook {webhook_id[:MAX_ID_LENGTH]} not found")
    return webhook_id


def _whole_number(text: str, name: str) -> int:
    number = request_body.ascii_int(text, MAX_CURSOR_DIGITS)  # str.isdigit takes '²', which int() refuses
    if number is None:
        raise ApiError(400, f"{name} must be a whole number")
    return number

