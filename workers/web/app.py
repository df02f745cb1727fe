"""The web worker's Starlette application: the HTTP API, the asset downloads, /ws and the pages."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from cluster import jobspec, kinds
from cluster.config import ClusterConfig
from cluster.logs import get_logger
from workers.web import paging, pipeline_routes, queue_routes, request_body, webhook_routes
from workers.web.assets import asset_response, hls_file_response, text_file_response
from workers.web.auth import SessionCache, admit, login, logout, update_user, user_call
from workers.web.client_ip import client_ip
from workers.web.errors import EXCEPTION_HANDLERS, ApiError, too_many
from workers.web.front_door import FrontDoor
from workers.web.hub import Hub
from workers.web.operator_access import is_operator, require_operator
from workers.web.rpc import ControlClient
from workers.web.upload_slots import UploadSlots
from workers.web.uploads import ingest, receive_body, source_limits, upload_extension
from workers.web.websocket import websocket_endpoint

if TYPE_CHECKING:
    from cluster.storage import Storage

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
HEALTH_TTL_S = 0.2

log = get_logger()


@dataclass
class WorkerState:
    config: ClusterConfig
    rpc: ControlClient
    hub: Hub
    storage: Storage
    ffmpeg: str
    sessions: SessionCache
    health: tuple[float, dict[str, Any]] = (0.0, {})
    health_refresh: asyncio.Lock = field(default_factory=asyncio.Lock)
    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    draining: bool = False
    uploads: UploadSlots = field(init=False)

    def __post_init__(self) -> None:
        self.uploads = UploadSlots(self.config.max_uploads_per_worker, self.config.max_uploads_per_user)

    def stats(self) -> dict[str, Any]:
        """What the heartbeat reports to the primary (for /metrics and recycling)."""
        return {
            "requests": sum(self.requests.values()),
            "requestsByRoute": [[method, route, status, n] for (method, route, status), n in self.requests.items()],
            "wsClients": len(self.hub.clients),
            "eventsDelivered": self.hub.delivered,
            "tasks": len(asyncio.all_tasks()),  # an idle WebSocket holds none: a count that grows with them leaks
        }


def build_app(state: WorkerState) -> Starlette:
    routes = [
        Route("/api/health", health),
        Route("/metrics", metrics),
        Route("/api/login", login_route, methods=["POST"]),
        Route("/api/logout", logout, methods=["DELETE", "POST"]),
        Route("/api/user", get_user),
        Route("/api/user", put_user, methods=["PUT"]),
        Route("/api/upload-video", upload_video, methods=["POST"]),
        Route("/api/video/resize", resize_video, methods=["PUT"]),
        Route("/api/video/convert", convert_video, methods=["PUT"]),
        Route("/api/videos", list_videos),
        Route("/api/videos/{video_id}", delete_video, methods=["DELETE"]),
        Route("/api/videos/{video_id}/jobs", list_video_jobs),
        Route("/api/video/extract-audio", extract_audio, methods=["PATCH"]),
        Route("/api/video/hls", make_hls, methods=["POST"]),
        Route("/api/jobs", list_jobs),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/kinds", list_kinds),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}", cancel_job, methods=["DELETE"]),
        Route("/api/jobs/{job_id}/retry", retry_job, methods=["POST"]),
        Route("/api/queue/stats", queue_stats),
        Route("/api/queue/dead-letter", dead_letter),
        Route("/api/queue/dead-letter/{job_id}", discard_dead_job, methods=["DELETE"]),
        Route("/api/queue/pause", pause_queue, methods=["POST"]),
        Route("/api/queue/resume", resume_queue, methods=["POST"]),
        Route("/api/queue/clean", clean_queue, methods=["POST"]),
        Route("/api/queue/types", queue_routes.queue_types),
        Route("/api/queue/stats/{job_type}", queue_routes.type_stats),
        Route("/api/queue/dead-letter/stats", queue_routes.dead_letter_stats),
        Route("/api/queue/dead-letter/jobs", dead_letter),  # the same list, by the name the contract gives it
        Route("/api/queue/dead-letter/{job_id}/retry", queue_routes.retry_dead_job, methods=["POST"]),
        Route("/api/queue/{job_type}/pause", queue_routes.pause_type, methods=["POST"]),
        Route("/api/queue/{job_type}/resume", queue_routes.resume_type, methods=["POST"]),
        Route("/api/queue/{job_type}/clean", queue_routes.clean_type, methods=["POST"]),
        Route("/api/queue/{job_type}/jobs", queue_routes.type_jobs),
        Route("/api/videos/{video_id}/jobs/current", queue_routes.current_video_jobs),
        Route("/api/admin/processes", list_processes),
        Route("/api/admin/reload", reload_workers, methods=["POST"]),
        Route("/api/webhooks", webhook_routes.create_webhook, methods=["POST"]),
        Route("/api/webhooks", webhook_routes.list_webhooks),
        Route("/api/webhooks/{webhook_id}", webhook_routes.get_webhook),
        Route("/api/webhooks/{webhook_id}", webhook_routes.delete_webhook, methods=["DELETE"]),
        Route("/api/webhooks/{webhook_id}/deliveries", webhook_routes.list_deliveries),
        Route("/api/pipelines", pipeline_routes.create_pipeline, methods=["POST"]),
        Route("/api/pipelines", pipeline_routes.list_pipelines),
        Route("/api/pipelines/{pipeline_id}", pipeline_routes.get_pipeline),
        Route("/api/pipelines/{pipeline_id}", pipeline_routes.cancel_pipeline, methods=["DELETE"]),
        Route("/api/pipelines/{pipeline_id}/approve", pipeline_routes.approve_pipeline, methods=["POST"]),
        Route("/dashboard", page("dashboard.html")),
        Route("/get-video-asset", get_video_asset),
        Route("/hls/{video_id}/{path:path}", get_hls_file),
        WebSocketRoute("/ws", websocket_endpoint),
        Mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web"),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
                    middleware=[Middleware(FrontDoor, state=state)])
    app.state.worker = state
    return app


def _state(request: Request) -> WorkerState:
    return request.app.state.worker


async def health(request: Request) -> Response:
    """``{"status"}`` for anyone (200 ok, 503 shutting-down, for load balancers); the processes, queue and
    uptime only for an operator. Served from a snapshot at most HEALTH_TTL_S old, so probes cost the
    primary little."""
    details = await _health_snapshot(_state(request))
    status_code = 200 if details["status"] == "ok" else 503
    body = details if await is_operator(request) else {"status": details["status"]}
    return JSONResponse(body, status_code=status_code)


async def _health_snapshot(state: WorkerState) -> dict[str, Any]:
    fetched_at, details = state.health
    if time.monotonic() - fetched_at > HEALTH_TTL_S:
        async with state.health_refresh:  # one request refreshes; those arriving meanwhile reuse its answer
            fetched_at, details = state.health
            if time.monotonic() - fetched_at > HEALTH_TTL_S:
                details = await state.rpc.call("health")
                state.health = (time.monotonic(), details)
    return details


async def metrics(request: Request) -> Response:
    """Prometheus text, rendered by the primary; for an administrator or the ``--metrics-token``."""
    await require_operator(request)
    text = await _state(request).rpc.call("metrics")
    return Response(text, media_type="text/plain; version=0.0.4")


async def login_route(request: Request) -> Response:
    return await login(request, await request_body.api_json(request))


async def get_user(request: Request) -> JSONResponse:
    return JSONResponse(request.state.user)


async def put_user(request: Request) -> Response:
    return await update_user(request, await request_body.api_json(request))


async def upload_video(request: Request) -> JSONResponse:
    with _state(request).uploads.hold(request.state.user["userId"]):  # 429 past the caps, before any byte is read
        return await _receive_upload(request)


async def _receive_upload(request: Request) -> JSONResponse:
    state = _state(request)
    pipeline = pipeline_routes.named_pipeline(request)  # 400 for an unknown ?pipeline= before the body is read
    await admit(request, "upload")  # before the body is read
    # ?filename= also works: a header cannot carry a name outside Latin-1 from a browser
    filename = request.query_params.get("filename") or request.headers.get("filename")
    ext = upload_extension(filename)
    temp = await receive_body(request, state.storage, state.config.max_upload_mb * 1024 * 1024,
                              state.config.upload_idle_s, ext)
    video_id, info = await ingest(temp, ext, state.storage, state.ffmpeg, source_limits(state.config))
    try:
        await user_call(request, "add_video", videoId=video_id, name=filename, info=info)
    except Exception:
        await asyncio.to_thread(state.storage.remove_video, video_id)
        raise
    log.info("video uploaded", videoId=video_id, size=info["sizeBytes"], format=info["format"])
    if pipeline is not None:
        pipeline_id = await pipeline_routes.start_named(request, video_id, pipeline)
        return JSONResponse({"videoId": video_id, "pipelineId": pipeline_id}, status_code=201)
    return JSONResponse({"videoId": video_id}, status_code=201)


async def resize_video(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    return await _submit(request, "resize", body)


async def convert_video(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    return await _submit(request, "convert", body)


async def extract_audio(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    return await _submit(request, "extract-audio", body)


async def make_hls(request: Request) -> JSONResponse:
    body = await request_body.api_json(request)
    return await _submit(request, "hls", body)


async def create_job(request: Request) -> JSONResponse:
    """A job of any kind (`cluster.kinds`): ``{videoId, type, ...its params, priority?, timeout?}``."""
    body = await request_body.api_json(request)
    job_type = body.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise ApiError(400, f"type is required: one of {', '.join(kinds.KINDS)}")
    return await _submit(request, job_type, body)


async def list_kinds(_request: Request) -> JSONResponse:
    """The kinds of job (`cluster.kinds`): each one's type, its downloads and its field in a video's summary."""
    return JSONResponse([{"type": k.name, "downloads": list(k.downloads), "summaryField": k.summary_field}
                         for k in kinds.KINDS.values()])


async def delete_video(request: Request) -> JSONResponse:
    """Cancels the video's jobs (killing a running ffmpeg), forgets it, then removes its files."""
    video_id = _video_id(request.path_params["video_id"])
    answer = await user_call(request, "delete_video", videoId=video_id)
    await asyncio.to_thread(_state(request).storage.remove_video, video_id)
    log.info("video deleted", videoId=video_id, cancelledJobs=len(answer["cancelled"]))
    return JSONResponse({"videoId": video_id, "deleted": True, "cancelledJobs": answer["cancelled"]})


async def get_hls_file(request: Request) -> Response:
    video = await _video(request, request.path_params["video_id"])  # the ownership check, before any redirect
    return await hls_file_response(_state(request).storage, video["videoId"], request.path_params["path"])


async def list_videos(request: Request) -> JSONResponse:
    page = await user_call(request, "list_videos", limit=paging.limit(request), before=paging.before(request))
    return paging.page(request, [_video_view(v) for v in page["items"]], page["next"])


async def list_video_jobs(request: Request) -> JSONResponse:
    """A video's whole job history, newest first, a page at a time."""
    video_id = _video_id(request.path_params["video_id"])
    page = await user_call(request, "list_jobs", videoId=video_id, limit=paging.limit(request), before=paging.before(request),
                       requireVideo=True)
    return paging.page(request, page["items"], page["next"])


async def list_jobs(request: Request) -> JSONResponse:
    q = request.query_params
    page = await user_call(request, "list_jobs", state=q.get("state"), videoId=q.get("videoId"),
                       type=q.get("type"), limit=paging.limit(request), before=paging.before(request))
    return paging.page(request, page["items"], page["next"])


async def get_job(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "get_job", jobId=request.path_params["job_id"]))


async def cancel_job(request: Request) -> JSONResponse:
    job = await user_call(request, "cancel_job", jobId=request.path_params["job_id"])
    return JSONResponse(job)


async def retry_job(request: Request) -> JSONResponse:
    await admit(request, "job")
    job = await user_call(request, "retry_job", jobId=request.path_params["job_id"])
    return JSONResponse({"jobId": job["jobId"], "state": job["state"]}, status_code=202)


async def queue_stats(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "queue_stats"))


async def dead_letter(request: Request) -> JSONResponse:
    """The caller's dead jobs (an administrator's: everyone's), newest first, with their attempts."""
    page = await user_call(request, "dead_letter", limit=paging.limit(request), before=paging.before(request))
    return paging.page(request, page["items"], page["next"])


async def discard_dead_job(request: Request) -> JSONResponse:
    """Drop a dead job from the dead-letter list (and the store) without retrying it."""
    return JSONResponse(await user_call(request, "discard_job", jobId=request.path_params["job_id"]))


async def pause_queue(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "pause"))


async def resume_queue(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "resume"))


async def clean_queue(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "clean", olderThan=await queue_routes.clean_age_s(request)))


async def list_processes(request: Request) -> JSONResponse:
    return JSONResponse(await user_call(request, "processes"))


async def reload_workers(request: Request) -> JSONResponse:
    """Like SIGHUP: the web workers are replaced one at a time."""
    return JSONResponse(await user_call(request, "reload"))


def page(name: str) -> Any:
    """A page of web/ under a path without its .html."""
    async def serve(_request: Request) -> FileResponse:
        return FileResponse(WEB_DIR / name, media_type="text/html")

    return serve


async def get_video_asset(request: Request) -> Response:
    q = request.query_params
    video = await _video(request, q.get("videoId"))  # the ownership check, before any redirect
    storage = _state(request).storage
    path = _asset_path(storage, video, q.get("type"), q)
    if q.get("type") in kinds.DOWNLOADS and kinds.DOWNLOADS[q["type"]].through_worker:
        return await text_file_response(storage, path, download_name(video, path))
    return await asset_response(storage, path, download_name(video, path))


# helpers


SAME_NAME_ASSETS = ("original", "converted", "audio")  # one file of its kind per video: the upload's name will do


def download_name(video: dict[str, Any], path: PurePath) -> str:
    """Named after the upload: ``clip.mp4`` -> ``clip-320x240.mp4``, ``clip.webm``, ``clip-thumbnail.jpg``."""
    stem = "".join(c for c in PurePosixPath(str(video["name"]).replace("\\", "/")).stem if c.isprintable())
    stem = stem.strip(" .")[:100] or video["videoId"]
    if path.stem in SAME_NAME_ASSETS:
        return f"{stem}{path.suffix}"
    return f"{stem}-{path.name}"


def _asset_path(storage: Storage, video: dict[str, Any], kind: str | None, q: Any) -> PurePath:
    """The file of a download: the original, or one a kind of job makes (`cluster.kinds` DOWNLOADS)."""
    video_id, fmt = video["videoId"], video["info"]["format"]
    if kind == "original":
        return storage.original(video_id, fmt)
    download = kinds.DOWNLOADS.get(kind) if kind else None
    if download is None:
        raise ApiError(400, f"type must be one of original, {', '.join(kinds.DOWNLOADS)}")
    try:
        return download.path(storage, video_id, video["info"], q)
    except jobspec.InvalidJob as e:
        raise ApiError(400, str(e)) from e


def _video_id(video_id: Any) -> str:
    if not isinstance(video_id, str) or not video_id:
        raise ApiError(400, "videoId is required")
    if not video_id.isalnum():
        raise ApiError(404, f"video {video_id} not found")
    return video_id


async def _video(request: Request, video_id: Any) -> dict[str, Any]:
    return await user_call(request, "get_video", videoId=_video_id(video_id))


async def _submit(request: Request, job_type: str, body: dict[str, Any]) -> JSONResponse:
    """One call to the primary: it checks the video, the parameters, the rate limit and the cap, and
    answers the identical job still active, or queues a new one (stored before it answers).
    Every job route takes ``videoId`` in its JSON body or its query string."""
    video_id = body.get("videoId", request.query_params.get("videoId"))
    ip = client_ip(request)
    answer = await user_call(request, "submit_job", type=job_type, videoId=_video_id(video_id), body=body, ip=ip)
    if "retryAfter" in answer:
        raise too_many("too many job requests", answer["retryAfter"])
    log.info("job requested", jobId=answer["jobId"], videoId=video_id, created=answer["created"])
    return JSONResponse({"jobId": answer["jobId"]}, status_code=202 if answer["created"] else 200)


def _video_view(video: dict[str, Any]) -> dict[str, Any]:
    info = video["info"]
    return {
        "videoId": video["videoId"],
        "owner": video["owner"],
        "name": video["name"],
        "extension": info["format"],
        "dimensions": {"width": info["width"], "height": info["height"]},
        "duration": info["duration"],
        "size": info["sizeBytes"],
        "videoCodec": info["videoCodec"],
        "audioCodec": info["audioCodec"],
        "createdAt": video["createdAt"],
        **{name: video.get(name, empty) for name, empty in kinds.summary_fields().items()},
        "thumbnail": f"/get-video-asset?videoId={video['videoId']}&type=thumbnail",
    }
