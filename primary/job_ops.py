"""The control operations on videos, jobs, the queue and events; each one sees only what its caller may.

Every request carries ``user`` (``{"userId", "admin"}``), set by the web worker from the session.
Another user's video or job is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cluster.logs import clip, get_logger
from cluster.protocol import JobState, Priority
from primary.control import Handler, RequestError
from primary.engine import JobEngine
from primary.jobs import Job
from primary.process_monitor import ProcessMonitor
from primary.stats import queue_stats
from primary.store import JobStore

log = get_logger()


class Caller:
    def __init__(self, args: dict[str, Any]) -> None:
        user = args.get("user")
        if not isinstance(user, dict) or not user.get("userId"):
            raise RequestError(401, "not logged in")
        self.user_id = str(user["userId"])
        self.admin = bool(user.get("admin"))

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.user_id

    def require_admin(self) -> None:
        if not self.admin:
            raise RequestError(403, "administrators only")

    @property
    def owner_filter(self) -> str | None:
        return None if self.admin else self.user_id


class JobOps:
    def __init__(self, engine: JobEngine, store: JobStore, processes: Callable[[], list[dict[str, Any]]],
                 max_timeout_s: float, max_active_per_user: int = 0) -> None:
        self._engine = engine
        self._max_active_per_user = max_active_per_user  # queued + delayed + running; 0: no cap
        self._store = store
        self._processes = processes
        self._max_timeout_s = max_timeout_s
        self._started = time.monotonic()
        self._monitor = ProcessMonitor()

    def handlers(self) -> dict[str, Handler]:
        return {
            "health": self.health,
            "submit_job": self.submit_job,
            "get_job": self.get_job,
            "list_jobs": self.list_jobs,
            "add_video": self.add_video,
            "get_video": self.get_video,
            "list_videos": self.list_videos,
            "delete_video": self.delete_video,
            "cancel_job": self.cancel_job,
            "retry_job": self.retry_job,
            "queue_stats": self.queue_stats,
            "dead_letter": self.dead_letter,
            "discard_job": self.discard_job,
            "pause": lambda args: self._pause(args, True),
            "resume": lambda args: self._pause(args, False),
            "clean": self.clean,
            "events_since": self.events_since,
            "last_seq": lambda _args: self._engine.bus.last_seq,
            "processes": self.processes,
        }

    def health(self, _args: dict[str, Any]) -> dict[str, Any]:
        counts = {state.value: 0 for state in JobState}
        counts.update(self._store.count_by_state())
        status = "shutting-down" if self._engine.draining else "ok"
        return {"status": status, "uptimeS": round(time.monotonic() - self._started, 3), "paused": self._engine.paused,
                "queue": counts, "processes": self._processes()}

    def processes(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        Caller(args).require_admin()
        return self._monitor.describe(self._processes())

    # videos

    def add_video(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        self._store.add_video(str(args["videoId"]), caller.user_id, str(args["name"]), dict(args["info"]),
                              time.time() * 1000)
        log.info("video added", videoId=args["videoId"], name=clip(args["name"]))
        return {"videoId": args["videoId"]}

    def get_video(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._video(Caller(args), str(args["videoId"]))

    def list_videos(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        videos = self._store.list_videos(Caller(args).owner_filter)
        for video in videos:
            video.update(_outputs(self._store.list_jobs(video_id=video["videoId"], limit=1000)))
        return videos

    def delete_video(self, args: dict[str, Any]) -> dict[str, Any]:
        video = self._video(Caller(args), str(args["videoId"]))
        cancelled = [job.id for job in list(self._engine.active.values()) if job.video_id == video["videoId"]]
        for job_id in cancelled:
            self._engine.cancel(job_id)
        self._store.delete_video(video["videoId"])
        log.info("video removed", videoId=video["videoId"], cancelled=len(cancelled))
        return {"cancelled": cancelled}

    # jobs

    def submit_job(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        video = self._video(caller, str(args["videoId"]))
        timeout = args.get("timeout")
        if timeout is not None and float(timeout) > self._max_timeout_s:
            raise RequestError(400, f"timeout must be at most {self._max_timeout_s:g} seconds")
        job_type, params = str(args["type"]), dict(args.get("params") or {})
        if not self._engine.find_identical(job_type, video["videoId"], params):  # a repeat is answered, not capped
            self._check_active_jobs(video["owner"])
        job, created = self._engine.submit(
            job_type, video["videoId"], params,
            priority=Priority(args.get("priority") or "normal"),
            timeout_s=float(timeout) if timeout is not None else None, owner=video["owner"],
        )
        return {"jobId": job.id, "created": created}

    def get_job(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._job(Caller(args), str(args["jobId"])).public()

    def list_jobs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jobs = self._store.list_jobs(state=args.get("state"), video_id=args.get("videoId"), job_type=args.get("type"),
                                     owner=Caller(args).owner_filter, limit=int(args.get("limit") or 100))
        return [self._engine.active.get(job.id, job).public() for job in jobs]

    def cancel_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        return self._engine.cancel(job.id).public()

    def retry_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        self._check_active_jobs(job.owner)
        return self._engine.retry(job).public()

    def discard_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        if job.state is not JobState.DEAD:
            raise RequestError(409, f"job {job.id} is {job.state.value}: only dead jobs are discarded")
        self._store.delete_job(job.id)
        log.info("dead job discarded", jobId=job.id)
        return {"jobId": job.id, "discarded": True}

    def dead_letter(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        jobs = self._store.list_jobs(state=JobState.DEAD.value, owner=Caller(args).owner_filter,
                                     limit=int(args.get("limit") or 100))
        return [{**job.public(), "attemptsDetail": [a.public() for a in self._store.attempts(job.id)]}
                for job in jobs]

    # the queue

    def queue_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args)
        return {**queue_stats(self._store, paused=self._engine.paused), "running": self._engine.running,
                "queueLength": len(self._engine.queue)}

    def _pause(self, args: dict[str, Any], paused: bool) -> dict[str, Any]:
        Caller(args).require_admin()
        self._engine.pause(paused)
        return {"paused": self._engine.paused}

    def clean(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args).require_admin()
        older_than_s = float(args.get("olderThan", 0))
        if older_than_s < 0:
            raise RequestError(400, "olderThan must not be negative")
        removed = self._store.delete_finished(time.time() * 1000 - older_than_s * 1000)
        log.info("finished jobs cleaned", removed=removed, olderThanS=older_than_s)
        return {"removed": removed}

    def events_since(self, args: dict[str, Any]) -> dict[str, Any]:
        """For web workers (gaps) and resuming clients; the worker filters what each client may see."""
        since = int(args.get("since", 0))
        limit = min(int(args.get("limit") or 1000), 1000)
        events = self._store.events_since(since, limit)
        return {"events": [e.body().decode() for e in events], "lastSeq": self._engine.bus.last_seq}

    # helpers

    def _check_active_jobs(self, owner: str) -> None:
        cap = self._max_active_per_user
        if cap and sum(1 for job in self._engine.active.values() if job.owner == owner) >= cap:
            raise RequestError(429, f"too many active jobs: at most {cap} queued, delayed or running per user")

    def _video(self, caller: Caller, video_id: str) -> dict[str, Any]:
        video = self._store.get_video(video_id)
        if video is None or not caller.may_see(video["owner"]):
            raise RequestError(404, f"video {video_id} not found")
        return video

    def _job(self, caller: Caller, job_id: str) -> Job:
        job = self._engine.active.get(job_id) or self._store.get_job(job_id)
        if job is None or not caller.may_see(job.owner):
            raise RequestError(404, f"job {job_id} not found")
        return job


def _outputs(jobs: list[Job]) -> dict[str, Any]:
    """A video's resizes, conversions, audio and HLS ladder, from its newest job of each kind."""
    resizes: dict[str, Any] = {}
    conversions: dict[str, Any] = {}
    singles: dict[str, Any] = {}
    for job in jobs:  # newest first: keep the first job seen for each output
        summary = {"jobId": job.id, "state": job.state.value, "progress": job.progress,
                   "processing": not job.state.is_final, "result": job.result}
        if job.type == "resize":
            resizes.setdefault(f"{job.params['width']}x{job.params['height']}", summary)
        elif job.type == "convert":
            conversions.setdefault(job.params["format"], summary)
        else:
            singles.setdefault(job.type, summary)
    return {"resizes": resizes, "conversions": conversions, "audio": singles.get("extract-audio"),
            "hls": singles.get("hls")}
