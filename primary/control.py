"""Control RPC: the web workers' requests to the primary, over a ROUTER socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from cluster.logs import get_logger
from cluster.protocol import JobState, Priority, ProtocolError, Reply, Request
from primary.engine import EngineError, JobEngine
from primary.jobs import Job
from primary.stats import queue_stats
from primary.store import JobStore

log = get_logger()


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    def __init__(self, socket: zmq.asyncio.Socket, engine: JobEngine, store: JobStore,
                 processes: Callable[[], list[dict[str, Any]]], max_timeout_s: float) -> None:
        self._socket = socket
        self._engine = engine
        self._store = store
        self._processes = processes
        self._max_timeout_s = max_timeout_s
        self._started = time.monotonic()
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "health": self.health,
            "submit_job": self.submit_job,
            "get_job": self.get_job,
            "list_jobs": self.list_jobs,
            "add_video": self.add_video,
            "get_video": self.get_video,
            "list_videos": self.list_videos,
            "cancel_job": self.cancel_job,
            "retry_job": self.retry_job,
            "queue_stats": self.queue_stats,
            "dead_letter": self.dead_letter,
            "pause": lambda _args: self._pause(True),
            "resume": lambda _args: self._pause(False),
            "clean": self.clean,
            "events_since": self.events_since,
            "last_seq": lambda _args: self._engine.bus.last_seq,
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
        except (RequestError, EngineError) as e:
            return Reply(request.id, error=str(e), status=e.status)
        except Exception as e:
            log.exception("control request failed", op=request.op)
            return Reply(request.id, error=f"internal error: {e}", status=500)

    # operations

    def health(self, _args: dict[str, Any]) -> dict[str, Any]:
        counts = {state.value: 0 for state in JobState}
        counts.update(self._store.count_by_state())
        status = "shutting-down" if self._engine.draining else "ok"
        return {"status": status, "uptimeS": round(time.monotonic() - self._started, 3), "paused": self._engine.paused,
                "queue": counts, "processes": self._processes()}

    def submit_job(self, args: dict[str, Any]) -> dict[str, Any]:
        video_id = str(args["videoId"])
        if self._store.get_video(video_id) is None:
            raise RequestError(404, f"video {video_id} not found")
        timeout = args.get("timeout")
        if timeout is not None and float(timeout) > self._max_timeout_s:
            raise RequestError(400, f"timeout must be at most {self._max_timeout_s:g} seconds")
        job, created = self._engine.submit(
            str(args["type"]), video_id, dict(args.get("params") or {}),
            priority=Priority(args.get("priority") or "normal"),
            timeout_s=float(timeout) if timeout is not None else None, owner=str(args.get("owner") or ""),
        )
        return {"jobId": job.id, "created": created}

    def cancel_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._find_job(str(args["jobId"]))
        return self._engine.cancel(job.id).public()

    def retry_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._find_job(str(args["jobId"]))
        return self._engine.retry(job).public()

    def queue_stats(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {**queue_stats(self._store, paused=self._engine.paused), "running": self._engine.running,
                "queueLength": len(self._engine.queue)}

    def dead_letter(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jobs = self._store.list_jobs(state=JobState.DEAD.value, limit=int(args.get("limit") or 100))
        return [{**job.public(), "attemptsDetail": [a.public() for a in self._store.attempts(job.id)]}
                for job in jobs]

    def _pause(self, paused: bool) -> dict[str, Any]:
        self._engine.pause(paused)
        return {"paused": self._engine.paused}

    def clean(self, args: dict[str, Any]) -> dict[str, Any]:
        older_than_s = float(args.get("olderThan", 0))
        if older_than_s < 0:
            raise RequestError(400, "olderThan must not be negative")
        removed = self._store.delete_finished(time.time() * 1000 - older_than_s * 1000)
        log.info("finished jobs cleaned", removed=removed, olderThanS=older_than_s)
        return {"removed": removed}

    def events_since(self, args: dict[str, Any]) -> dict[str, Any]:
        since = int(args.get("since", 0))
        limit = min(int(args.get("limit") or 1000), 1000)
        events = self._store.events_since(since, limit)
        return {"events": [e.body().decode() for e in events], "lastSeq": self._engine.bus.last_seq}

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
