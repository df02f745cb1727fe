"""The control operations on the queue of each job type, the dead-letter list and a video's active jobs.

A type's counts come from the store's per-(state, type) counters (kept by triggers) and the engine's
memory (queued and running jobs), never from a scan. Pausing a type is an administrator's act, stored
like the pause of the whole queue, and told to every client (``queue:paused`` with ``data.type``).
"""

from __future__ import annotations

import time
from typing import Any

from cluster.kinds import KINDS
from cluster.logs import get_logger
from cluster.protocol import JobState
from primary.control import Handler, RequestError
from primary.engine import JobEngine
from primary.job_ops import Caller, JobOps
from primary.jobs import Job, now_ms
from primary.metrics import FINAL_STATES
from primary.store import JobStore
from primary.type_gates import PAUSED_TYPES_SETTING

log = get_logger()


class QueueOps:
    def __init__(self, engine: JobEngine, store: JobStore, jobs: JobOps) -> None:
        self._engine = engine
        self._store = store
        self._jobs = jobs

    def handlers(self) -> dict[str, Handler]:
        return {
            "queue_types": self.queue_types,
            "queue_type_stats": self.queue_type_stats,
            "pause_type": lambda args: self._pause_type(args, True),
            "resume_type": lambda args: self._pause_type(args, False),
            "clean_type": self.clean_type,
            "list_type_jobs": self.list_type_jobs,
            "dead_letter_stats": self.dead_letter_stats,
            "retry_dead_job": self.retry_dead_job,
            "current_video_jobs": self.current_video_jobs,
        }

    # a queue per type

    def queue_types(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args)
        counts = self._counts()
        running = self._engine.running_by_type()
        return {"paused": self._engine.paused,
                "types": [self._type_stats(t, counts.get(t, {}), running[t]) for t in tuple(KINDS)]}

    def queue_type_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args)
        job_type = _known_type(args)
        return self._type_stats(job_type, self._counts().get(job_type, {}), self._engine.running_by_type()[job_type])

    def _pause_type(self, args: dict[str, Any], paused: bool) -> dict[str, Any]:
        Caller(args).require_admin()
        job_type = _known_type(args)
        gates = self._engine.gates
        if (job_type in gates.paused) != paused:
            if paused:
                gates.paused.add(job_type)
            else:
                gates.paused.discard(job_type)
            self._engine.flush()  # the events before this one are stored first: seqs are written in order
            event = self._engine.bus.make("queue:paused" if paused else "queue:resumed", {
                "type": job_type, "paused": paused, "at": now_ms(), "queued": self._engine.queue.waiting(job_type)})
            self._store.set_setting(PAUSED_TYPES_SETTING, gates.setting(), [event])
            self._engine.bus.publish(event)
            log.info("job type paused" if paused else "job type resumed", type=job_type)
            if not paused:
                self._engine.on_work()
        return {"type": job_type, "paused": job_type in gates.paused}

    def clean_type(self, args: dict[str, Any]) -> dict[str, Any]:
        Caller(args).require_admin()
        job_type = _known_type(args)
        older_than_s = float(args.get("olderThan", 0))
        if older_than_s < 0:
            raise RequestError(400, "olderThan must not be negative")
        self._engine.flush()
        cut = time.time() * 1000 - older_than_s * 1000
        removed = sum(self._store.delete_ended(state.value, cut, job_type=job_type) for state in FINAL_STATES)
        log.info("finished jobs cleaned", type=job_type, removed=removed, olderThanS=older_than_s)
        return {"type": job_type, "removed": removed}

    async def list_type_jobs(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of this type's jobs (the caller's; an administrator's: everyone's), newest first."""
        job_type = _known_type(args)
        return await self._jobs.list_jobs({**args, "type": job_type, "videoId": None, "requireVideo": False})

    def _type_stats(self, job_type: str, counts: dict[str, int], running: int) -> dict[str, Any]:
        gates = self._engine.gates
        return {"type": job_type, "paused": job_type in gates.paused, "concurrency": gates.limits.get(job_type),
                "waiting": self._engine.queue.waiting(job_type), "running": running,
                "delayed": counts.get(JobState.DELAYED.value, 0), "completed": counts.get(JobState.COMPLETED.value, 0),
                "failed": counts.get(JobState.DEAD.value, 0), "cancelled": counts.get(JobState.CANCELLED.value, 0)}

    def _counts(self) -> dict[str, dict[str, int]]:
        by_type: dict[str, dict[str, int]] = {}
        for state, job_type, n in self._store.count_by_state_and_type():
            by_type.setdefault(job_type, {})[state] = n
        return by_type

    # dead letters

    def dead_letter_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        """The dead jobs the caller may see, by type (an administrator: every user's, from the counters)."""
        caller = Caller(args)
        if caller.admin:
            by_type = {t: c[JobState.DEAD.value] for t, c in self._counts().items() if c.get(JobState.DEAD.value)}
        else:
            self._engine.flush()
            by_type = self._store.count_dead_by_type(caller.user_id)
        return {"total": sum(by_type.values()), "byType": dict(sorted(by_type.items()))}

    def retry_dead_job(self, args: dict[str, Any]) -> dict[str, Any]:
        job = self._jobs.get_job(args)  # 404 for a job the caller may not see
        if job["state"] != JobState.DEAD.value:
            raise RequestError(409, f"job {job['jobId']} is {job['state']}: not in the dead-letter list")
        return self._jobs.retry_job(args)

    # a video's active jobs

    def current_video_jobs(self, args: dict[str, Any]) -> dict[str, Any]:
        """The video's queued, delayed and running jobs, in queue order, each queued one with its position."""
        video = self._jobs.get_video(args)  # 404 for a video the caller may not see
        self._engine.flush()  # the store knows every job the engine has made
        active = self._engine.active
        jobs = [active[j] for j in self._store.unfinished_of_video(video["videoId"]) if j in active]
        return {"items": [self._view(job) for job in sorted(jobs, key=lambda job: job.queue_order)]}

    def _view(self, job: Job) -> dict[str, Any]:
        view = job.public()
        if job.id in self._engine.queue:
            view["queuePosition"] = self._engine.queue.position(job.id)
        return view


def _known_type(args: dict[str, Any]) -> str:
    job_type = str(args.get("type", ""))
    known = tuple(KINDS)
    if job_type not in known:
        raise RequestError(404, f"unknown job type {job_type[:64]!r} (known: {', '.join(known)})")
    return job_type
