"""Control RPC: the web workers' requests to the primary, over a ROUTER socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import JobState, Priority, ProtocolError, Reply, Request
from primary.engine import JobEngine
from primary.jobs import Job
from primary.store import JobStore

log = get_logger()


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    def __init__(self, socket: zmq.asyncio.Socket, engine: JobEngine, store: JobStore,
                 processes: Callable[[], list[dict[str, Any]]], default_timeout_s: float, max_retries: int) -> None:
        self._socket = socket
        self._engine = engine
        self._store = store
        self._processes = processes
        self._default_timeout_s = default_timeout_s
        self._max_retries = max_retries
        self._started = time.monotonic()
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "health": self.health,
            "submit_job": self.submit_job,
            "get_job": self.get_job,
            "list_jobs": self.list_jobs,
            "add_video": self.add_video,
            "get_video": self.get_video,
            "list_videos": self.list_videos,
        }

    async def serve(self) -> None:
        while True:
            identity, frame = await self._socket.recv_multipart()
            self._socket.send_multipart([identity, self.answer(frame).encode()])

    def answer(self, frame: bytes) -> Reply:
        try:
            request = Request.decode(frame)
        except ProtocolError as e:
            return Reply(0, error=str(e), status=400)
        handler = self._handlers.get(request.op)
        if handler is None:
            return Reply(request.id, error=f"unknown operation {request.op!r}", status=400)
        try:
            return Reply(request.id, result=handler(request.args))
        except RequestError as e:
            return Reply(request.id, error=str(e), status=e.status)
        except Exception as e:
            log.exception("control request failed", op=request.op)
            return Reply(request.id, error=f"internal error: {e}", status=500)

    # operations

    def health(self, _args: dict[str, Any]) -> dict[str, Any]:
        counts = {state.value: 0 for state in JobState}
        counts.update(self._store.count_by_state())
        return {"status": "ok", "uptimeS": round(time.monotonic() - self._started, 3),
                "queue": counts, "processes": self._processes()}

    def submit_job(self, args: dict[str, Any]) -> dict[str, Any]:
        video_id = str(args["videoId"])
        if self._store.get_video(video_id) is None:
            raise RequestError(404, f"video {video_id} not found")
        job, created = self._engine.submit(
            str(args["type"]), video_id, dict(args.get("params") or {}),
            priority=Priority(args.get("priority") or "normal"),
            timeout_s=float(args.get("timeout") or self._default_timeout_s),
            max_retries=self._max_retries, owner=str(args.get("owner") or ""),
        )
        return {"jobId": job.id, "created": created}

    def get_job(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._find_job(str(args["jobId"])).public()

    def list_jobs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jobs = self._store.list_jobs(state=args.get("state"), video_id=args.get("videoId"),
                                     job_type=args.get("type"), limit=int(args.get("limit") or 100))
        return [self._live(job).public() for job in jobs]

    def add_video(self, args: dict[str, Any]) -> dict[str, Any]:
        self._store.add_video(str(args["videoId"]), str(args.get("owner") or ""), str(args["name"]),
                              dict(args["info"]), time.time() * 1000)
        log.info("video added", videoId=args["videoId"], name=args["name"])
        return {"videoId": args["videoId"]}

    def get_video(self, args: dict[str, Any]) -> dict[str, Any]:
        video = self._store.get_video(str(args["videoId"]))
        if video is None:
            raise RequestError(404, f"video {args['videoId']} not found")
        return video

    def list_videos(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        videos = self._store.list_videos(args.get("owner"))
        for video in videos:
            video.update(_outputs(self._store.list_jobs(video_id=video["videoId"], limit=1000)))
        return videos

    # helpers

    def _find_job(self, job_id: str) -> Job:
        job = self._engine.active.get(job_id) or self._store.get_job(job_id)
        if job is None:
            raise RequestError(404, f"job {job_id} not found")
        return job

    def _live(self, job: Job) -> Job:
        return self._engine.active.get(job.id, job)


def _outputs(jobs: list[Job]) -> dict[str, Any]:
    """A video's resizes and conversions, from its newest job of each kind."""
    resizes: dict[str, Any] = {}
    conversions: dict[str, Any] = {}
    for job in jobs:  # newest first: keep the first job seen for each output
        summary = {"jobId": job.id, "state": job.state.value, "progress": job.progress,
                   "processing": not job.state.is_final}
        if job.type == "resize":
            resizes.setdefault(f"{job.params['width']}x{job.params['height']}", summary)
        elif job.type == "convert":
            conversions.setdefault(job.params["format"], summary)
    return {"resizes": resizes, "conversions": conversions}
