"""The HTTP benchmark's baseline: a bare Starlette app whose /api/health body is as large as the cluster's.

Served by `uvicorn --workers 2 --http httptools --loop uvloop`; the body size comes from BASELINE_BODY_BYTES.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY_BYTES_ENV = "BASELINE_BODY_BYTES"


def padded_body(size: int) -> dict[str, str]:
    """A JSON object that JSONResponse renders in exactly `size` bytes (or its minimum, if larger): the
    cluster's own answer to a caller without a login, {"status":"ok"}, padded if need be."""
    body = {"status": "ok"}
    if size > len(JSONResponse(body).body):
        body["pad"] = ""
        body["pad"] = "x" * max(0, size - len(JSONResponse(body).body))
    return body


BODY = padded_body(int(os.environ.get(BODY_BYTES_ENV, "0")))


async def health(_request: Request) -> JSONResponse:
    return JSONResponse(BODY)


app = Starlette(routes=[Route("/api/health", health)])
