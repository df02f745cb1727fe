"""The pipeline routes: start one, show one, list the caller's, approve a stage waiting for review, cancel one;
and the upload's ``?pipeline=NAME``, which starts one of the config's named pipelines on the new video.

The primary checks each stage against the video and who may see which pipeline; these routes check the shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from cluster import pipeline_spec
from cluster.logs import get_logger
from workers.web import paging, request_body
from workers.web.auth import admit, user_call
from workers.web.errors import ApiError

log = get_logger()

MAX_ID_LENGTH = 64


async def create_pipeline(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    video_id = body.get("videoId")
    if not isinstance(video_id, str) or not video_id:
        raise ApiError(400, "videoId is required")
    if not video_id.isalnum():
        raise ApiError(404, f"video {video_id[:MAX_ID_LENGTH]} not found")
    try:
        stages = pipeline_spec.check_stages(body.get("stages"))
    except pipeline_spec.InvalidPipeline as e:
        raise ApiError(400, str(e)) from e
    await admit(request, "job")  # one job request's worth
    created = await user_call(request, "create_pipeline", videoId=video_id, stages=stages)
    log.info("pipeline requested", pipelineId=created["pipelineId"], videoId=video_id, stages=len(stages))
    return JSONResponse({"pipelineId": created["pipelineId"]}, status_code=202)


async def get_pipeline(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "get_pipeline", pipelineId=_pipeline_id(request)))


async def approve_pipeline(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "approve_pipeline", pipelineId=_pipeline_id(request)))


async def cancel_pipeline(request: Request) -> JSONResponse:
    """``DELETE /api/pipelines/{id}``: the pipeline as it is once cancelled; 409 when it has already ended."""
    cancelled = await user_call(request, "cancel_pipeline", pipelineId=_pipeline_id(request))
    log.info("pipeline cancelled", pipelineId=cancelled["pipelineId"])
    return JSONResponse(cancelled)


async def list_pipelines(request: Request) -> JSONResponse:
    """A bare JSON array, newest first; ``X-Next-Cursor`` and ``Link`` name the next page, as /api/jobs does."""
    page = await user_call(request, "list_pipelines", videoId=request.query_params.get("videoId") or None,
                           limit=paging.limit(request), before=paging.before(request))
    return paging.page(request, page["items"], page["next"])


# an upload's ?pipeline=NAME


def named_pipeline(request: Request) -> str | None:
    """The upload's ``?pipeline=``; 400 for a name the config does not hold (before the body is read)."""
    name = request.query_params.get("pipeline")
    if name is None:
        return None
    if name not in request.app.state.worker.config.pipelines:
        raise ApiError(400, f"no pipeline named {name[:MAX_ID_LENGTH]!r}")
    return name


async def start_named(request: Request, video_id: str, name: str) -> str:
    """Start the named pipeline on the uploaded video; when the primary refuses it (a stage that does not
    fit this video, the per-user cap), the video goes again and the upload answers that refusal."""
    try:
        created: dict[str, Any] = await user_call(request, "create_pipeline", videoId=video_id, name=name)
    except Exception:
        await user_call(request, "delete_video", videoId=video_id)
        await asyncio.to_thread(request.app.state.worker.storage.remove_video, video_id)
        raise
    log.info("pipeline started by an upload", pipelineId=created["pipelineId"], videoId=video_id, name=name)
    return created["pipelineId"]


def _pipeline_id(request: Request) -> str:
    pipeline_id = request.path_params["pipeline_id"]
    if not pipeline_id.isalnum() or len(pipeline_id) > MAX_ID_LENGTH:
        raise ApiError(404, f"pipeline {pipeline_id[:MAX_ID_LENGTH]} not found")
    return pipeline_id
