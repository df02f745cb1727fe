"""The routes of each job type's queue (stats, pause, resume, clean, jobs), the dead-letter list and a
video's active jobs. The primary checks who may do what and which types exist; these check the input."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster.protocol import JobState
from workers.web import paging, request_body
from workers.web.auth import admit, user_call
from workers.web.errors import ApiError

MAX_NAME_CHARS = 64
STATES = tuple(state.value for state in JobState)


async def queue_types(request: Request) -> JSONResponse:
    """Every type's queue at once (the dashboard's rows)."""
    return JSONResponse(await user_call(request, "queue_types"))


async def type_stats(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "queue_type_stats", type=_type(request)))


async def pause_type(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "pause_type", type=_type(request)))


async def resume_type(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "resume_type", type=_type(request)))


async def clean_type(request: Request) -> JSONResponse:
    older_than_s = await clean_age_s(request)
    return JSONResponse(await user_call(request, "clean_type", type=_type(request), olderThan=older_than_s))


async def clean_age_s(request: Request) -> float:
    """A clean's ``olderThan`` (seconds, default an hour), from its JSON body or its query string: the whole
    queue's clean and a type's take it alike."""
    body = await request_body.api_json(request)
    older_than = body.get("olderThan", request.query_params.get("olderThan", 3600))
    if isinstance(older_than, bool):
        raise ApiError(400, "olderThan must be a number of seconds")
    try:
        older_than_s = float(older_than)
    except (TypeError, ValueError, OverflowError) as e:
        raise ApiError(400, "olderThan must be a number of seconds") from e
    if not math.isfinite(older_than_s):
        raise ApiError(400, "olderThan must be a number of seconds")
    if older_than_s < 0:
        raise ApiError(400, "olderThan must not be negative")
    return older_than_s


async def type_jobs(request: Request) -> JSONResponse:
    """A page of the type's jobs, newest first, optionally of one state; paged like GET /api/jobs."""
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}")
    page = await user_call(request, "list_type_jobs", type=_type(request), state=state, limit=paging.limit(request),
                           before=paging.before(request))
    return paging.page(request, page["items"], page["next"])


async def dead_letter_stats(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "dead_letter_stats"))


async def retry_dead_job(request: Request) -> JSONResponse:
    await admit(request, "job")
    job = await user_call(request, "retry_dead_job", jobId=_name(request, "job_id", "job"))
    return JSONResponse({"jobId": job["jobId"], "state": job["state"]}, status_code=202)


async def current_video_jobs(request: Request) -> JSONResponse:
    """The video's queued, delayed and running jobs, in queue order (a bare list: it is short)."""
    answer = await user_call(request, "current_video_jobs", videoId=_name(request, "video_id", "video"))
    return JSONResponse(answer["items"])


def _type(request: Request) -> str:
    job_type = request.path_params["job_type"]
    if len(job_type) > MAX_NAME_CHARS or not job_type.replace("-", "").isalnum() or not job_type.isascii():
        raise ApiError(404, f"unknown job type {job_type[:MAX_NAME_CHARS]!r}")
    return job_type


def _name(request: Request, param: str, what: str) -> str:
    value = request.path_params[param]
    if len(value) > 200 or not value.replace("-", "").isalnum() or not value.isascii():
        raise ApiError(404, f"{what} {value[:MAX_NAME_CHARS]} not found")
    return value



