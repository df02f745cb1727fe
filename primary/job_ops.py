"""The control operations on videos, jobs, the queue and events; each one sees only what its caller may.

Every request carries ``user`` (``{"userId", "admin"}``), set by the web worker from the session.
Another user's video or job is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cluster import jobspec, kinds
from cluster.logs import clip, get_logger
from cluster.protocol import JobState, Priority
from primary.control import Handler, RequestError
from primary.engine import JobEngine
from primary.jobs import Attempt, Job
from primary.process_monitor import ProcessMonitor
from primary.stats import WindowStats, queue_stats
from primary.store import CursorError, JobStore, StoreReads, job_cursor, video_cursor

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
                 max_timeout_s: float, max_active_per_user: int = 0, *, reads: StoreReads | None = None,
                 job_tokens: Callable[[str, Any], float] | None = None, window: WindowStats | None = None,
                 max_job_work: float = 0.0) -> None:
        self._engine = engine
        self._max_job_work = max_job_work  # output pixels x seconds; 0: no bound
        self._max_active_per_user = max_active_per_user  # queued + delayed + running; 0: no cap
        self._store = store
        self._reads = reads or store  # read-only connections for the long reads, run off the loop
        self._off_loop = reads is not None
        self._job_tokens = job_tokens  # (user, address) -> 0 when a job token was taken, else seconds to wait
        self._window = window or WindowStats()
        self._processes = processes
        self._max_timeout_s = max_timeout_s
        self._started = time.monotonic()
        self._monitor = ProcessMonitor()
        self.on_video_deleted: Callable[[str], None] = lambda video_id: None

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
        return self.visible_video(Caller(args), str(args["videoId"]))

    async def list_videos(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of videos, newest first, each with the newest job of each of its outputs."""
        owner, limit, before = Caller(args).owner_filter, _limit(args), args.get("before")

        def read() -> tuple[list[dict[str, Any]], dict[str, list[Job]]]:
            videos = self._reads.page_videos(owner, limit + 1, before)  # one more: is there a next page?
            return videos, self._reads.video_outputs([v["videoId"] for v in videos[:limit]])

        videos, outputs = await self._read(read)
        more = len(videos) > limit
        videos = videos[:limit]
        for video in videos:
            video.update(_outputs([self._engine.active.get(job.id, job) for job in outputs[video["videoId"]]]))
        return {"items": videos, "next": video_cursor(videos[-1]) if more else None}

    def delete_video(self, args: dict[str, Any]) -> dict[str, Any]:
        video = self.visible_video(Caller(args), str(args["videoId"]))
        self._engine.flush()  # so that the store knows every job of the video the engine has made
        active = [job_id for job_id in self._store.unfinished_of_video(video["videoId"]) if job_id in self._engine.active]
        cancelled = sorted(active, key=lambda job_id: self._engine.active[job_id].queue_order)
        for job_id in cancelled:
            self._engine.check_cancellable(job_id)  # before any is cancelled: all or none
        for job_id in cancelled:
            self._engine.cancel(job_id)
        self.on_video_deleted(video["videoId"])  # its pipelines go in the same write as the cancellations
        self._engine.flush()  # the cancellations are stored before the rows go
        self._store.delete_video(video["videoId"])
        log.info("video removed", videoId=video["videoId"], cancelled=len(cancelled))
        return {"cancelled": cancelled}

    # jobs

    def submit_job(self, args: dict[str, Any]) -> dict[str, Any]:
        """The whole job request in one call: the video, the parameters of its kind, the rate limit, an
        identical job still active, the per-user cap, then the queue. A rate-limited request answers
        ``{"retryAfter": s}`` (the web worker makes it a 429 with Retry-After)."""
        caller = Caller(args)
        video = self.visible_video(caller, str(args["videoId"]))
        job_type, params, options = self.job_request(caller, video, str(args["type"]), dict(args.get("body") or {}))
        if self._job_tokens is not None:
            wait_s = self._job_tokens(caller.user_id, args.get("ip"))
            if wait_s:
                return {"retryAfter": wait_s}
        timeout = options.get("timeout")
        job, created = self._engine.submit(
            job_type, video["videoId"], params, priority=Priority(options.get("priority") or "normal"),
            timeout_s=float(timeout) if timeout is not None else None, owner=video["owner"],
            admit=lambda: self.check_active_jobs(video["owner"]),  # a repeat is answered, not capped
        )
        return {"jobId": job.id, "created": created}

    def job_request(self, caller: Caller, video: dict[str, Any], job_type: str,
                    body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A job request checked as every job route checks it: its kind's parameters, the options, who may
        ask for priority high, its size, its timeout (400/403 when wrong). Pipelines check each stage so."""
        job_type, params, options = _job_request(job_type, body, video)
        if options.get("priority") == Priority.HIGH.value and not caller.admin:
            raise RequestError(403, "priority high is for administrators")
        if self._max_job_work:
            _check_work(job_type, params, video, self._max_job_work)
        timeout = options.get("timeout")
        if timeout is not None and float(timeout) > self._max_timeout_s:
            raise RequestError(400, f"timeout must be at most {self._max_timeout_s:g} seconds")
        return job_type, params, options

    def get_job(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._view(self._job(Caller(args), str(args["jobId"])))

    def _view(self, job: Job) -> dict[str, Any]:
        """The job as the API shows it; a queued one with its place in the queue now."""
        view = job.public()
        if job.state is JobState.QUEUED and job.id in self._engine.queue:
            view["queuePosition"] = self._engine.queue.position(job.id)
        return view

    async def list_jobs(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of jobs, newest first; ``videoId`` also answers a video's whole history, page by page."""
        limit, before, caller = _limit(args), args.get("before"), Caller(args)
        if args.get("requireVideo"):  # a video's history: 404 for a video the caller may not see
            self.visible_video(caller, str(args.get("videoId")))
        owner = caller.owner_filter
        jobs = await self._read(lambda: self._reads.list_jobs(
            state=args.get("state"), video_id=args.get("videoId"), job_type=args.get("type"), owner=owner,
            limit=limit + 1, before=before))
        return _page([self._view(self._engine.active.get(job.id, job)) for job in jobs[:limit]], jobs, limit)

    def cancel_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        return self._engine.cancel(job.id).public()

    def retry_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        self.check_active_jobs(job.owner)
        return self._engine.retry(job).public()

    def discard_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._job(Caller(args), str(args["jobId"]))
        if job.state is not JobState.DEAD:
            raise RequestError(409, f"job {job.id} is {job.state.value}: only dead jobs are discarded")
        self._engine.flush()
        self._store.delete_job(job.id)
        log.info("dead job discarded", jobId=job.id)
        return {"jobId": job.id, "discarded": True}

    async def dead_letter(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        limit, before, owner = _limit(args), args.get("before"), caller.owner_filter

        def read() -> list[tuple[Job, list[Attempt]]]:
            jobs = self._reads.list_jobs(state=JobState.DEAD.value, owner=owner, limit=limit + 1, before=before)
            return [(job, self._reads.attempts(job.id) if n < limit else []) for n, job in enumerate(jobs)]

        letters = await self._read(read)
        items = [{**job.public(), "attemptsDetail": [a.public(caller.admin) for a in attempts]}
                 for job, attempts in letters[:limit]]
        return _page(items, [job for job, _ in letters], limit)

    # the queue

    def queue_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args)
        return {**queue_stats(self._store, self._window, paused=self._engine.paused), "running": self._engine.running,
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
        self._engine.flush()
        removed = self._store.delete_finished(time.time() * 1000 - older_than_s * 1000)
        log.info("finished jobs cleaned", removed=removed, olderThanS=older_than_s)
        return {"removed": removed}

    async def events_since(self, args: dict[str, Any]) -> dict[str, Any]:
        """For web workers (gaps: every event) and resuming clients (``user``: only the events that user may
        see, through the (owner, seq) index); the worker still filters what each client may see."""
        since = int(args.get("since", 0))
        limit = min(int(args.get("limit") or 1000), 1000)
        owner = Caller(args).owner_filter if args.get("user") else None
        bodies = await self._read(lambda: self._reads.event_bodies_since(since, limit, owner))
        return {"events": bodies, "lastSeq": self._engine.bus.last_seq}

    # helpers

    async def _read(self, read: Callable[[], _T]) -> _T:
        """A read on its own read-only connection in a thread, so the loop goes on meanwhile."""
        try:
            return await asyncio.to_thread(read) if self._off_loop else read()
        except CursorError as e:
            raise RequestError(400, str(e)) from e

    def check_active_jobs(self, owner: str) -> None:
        """429 when the owner has as many queued, delayed and running jobs as a user may."""
        cap = self._max_active_per_user
        if cap and self._engine.active_by_owner[owner] >= cap:
            raise RequestError(429, f"too many active jobs: at most {cap} queued, delayed or running per user")

    def visible_video(self, caller: Caller, video_id: str) -> dict[str, Any]:
        """The video, or 404 when it does not exist or is another user's."""
        video = self._store.get_video(video_id)
        if video is None or not caller.may_see(video["owner"]):
            raise RequestError(404, f"video {video_id} not found")
        return video

    def _job(self, caller: Caller, job_id: str) -> Job:
        job = self._engine.active.get(job_id) or self._store.get_job(job_id)
        if job is None or not caller.may_see(job.owner):
            raise RequestError(404, f"job {job_id} not found")
        return job


_T = TypeVar("_T")


def _job_request(job_type: str, body: dict[str, Any], video: dict[str, Any]) -> tuple[str, dict[str, Any],
                                                                                      dict[str, Any]]:
    """The kind's parameters and the options every kind takes, from the request's body (400 when wrong:
    an unknown kind's message lists the known ones)."""
    try:
        return kinds.job_request(job_type, body, video["info"])
    except jobspec.InvalidJob as e:
        raise RequestError(400, str(e)) from e


def _check_work(job_type: str, params: dict[str, Any], video: dict[str, Any], max_work: float) -> None:
    try:
        jobspec.check_work(job_type, params, video["info"], max_work)
    except jobspec.InvalidJob as e:
        raise RequestError(400, str(e)) from e


def _limit(args: dict[str, Any]) -> int:
    return max(1, min(int(args.get("limit") or 100), 1000))


def _page(items: list[dict[str, Any]], jobs: list[Job], limit: int) -> dict[str, Any]:
    """A page of ``limit`` items from ``limit + 1`` jobs read, and the cursor of the next page (None when
    no job was left over: the last page is never empty, unless the list is)."""
    return {"items": items, "next": job_cursor(jobs[limit - 1]) if len(jobs) > limit else None}


def _outputs(jobs: list[Job]) -> dict[str, Any]:
    """A video's outputs, from its newest job of each (each kind's field: resizes, conversions, audio, hls...)."""
    return kinds.summarize(jobs)
