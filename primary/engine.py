"""The job engine: every job transition, written to the store before its event is published."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from cluster.logs import get_logger
from cluster.protocol import EventName, JobState, Priority
from primary.event_bus import EventBus
from primary.jobs import Job, JobIdFactory, dedupe_key, now_ms
from primary.queue import JobQueue
from primary.retry import RetryTracker
from primary.store import JobStore

log = get_logger()


class JobEngine:
    def __init__(self, store: JobStore, bus: EventBus, retries: RetryTracker) -> None:
        self.store = store
        self.bus = bus
        self.retries = retries
        self.queue = JobQueue()
        self.active: dict[str, Job] = {}  # every job not in a final state
        self._by_run: dict[str, str] = {}
        self._by_key: dict[str, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ids = JobIdFactory()
        self._order = store.max_queue_order()
        self.on_work: Callable[[], None] = lambda: None

    # intake

    def submit(self, job_type: str, video_id: str, params: dict[str, Any], *, priority: Priority,
               timeout_s: float, max_retries: int, owner: str = "") -> tuple[Job, bool]:
        """Queue a job; an identical job still queued, delayed or running is returned instead."""
        existing = self._by_key.get(dedupe_key(job_type, video_id, params))
        if existing:
            return self.active[existing], False
        job = Job(id=self._ids.make(job_type, video_id), type=job_type, video_id=video_id, params=params,
                  owner=owner, priority=priority, timeout_s=timeout_s, max_retries=max_retries)
        self._track(job)
        self._enqueue(job)
        return job, True

    def recover(self) -> None:
        """Restore unfinished jobs after a restart: running ones run again, delayed ones wait on."""
        for job in self.store.unfinished_jobs():
            self._ids.observe(job.id)
            self._track(job)
            if job.state is JobState.DELAYED:
                self._schedule_retry(job)
            elif job.state is JobState.RUNNING:
                log.info("job requeued after restart", jobId=job.id, videoId=job.video_id)
                job.attempts -= 1  # interrupted by the restart, not failed
                self._enqueue(job, keep_order=True)
            else:
                self.queue.push(job.id, job.priority)
        log.info("jobs recovered", count=len(self.active), queued=len(self.queue))

    # dispatch

    def next_job(self) -> Job | None:
        job_id = self.queue.pop()
        return self.active[job_id] if job_id else None

    def start(self, job: Job, executor: str) -> str:
        job.run_id = uuid.uuid4().hex
        job.executor = executor
        job.attempts += 1
        job.state = JobState.RUNNING
        job.started_at = now_ms()
        job.progress = 0.0
        self._by_run[job.run_id] = job.id
        self._commit(job, EventName.STARTED, startedAt=job.started_at, queuedAt=job.queued_at,
                     attempt=job.attempts - 1)
        return job.run_id

    def job_for_run(self, run_id: str) -> Job | None:
        job_id = self._by_run.get(run_id)
        return self.active.get(job_id) if job_id else None

    # reports from executors

    def progress(self, run_id: str, percent: float, speed: float | None, eta_s: float | None) -> None:
        job = self.job_for_run(run_id)
        if job is None or percent <= job.progress:
            return
        job.progress = percent
        self._commit(job, EventName.PROGRESS, progress=percent, speed=speed, etaSeconds=eta_s)

    def complete(self, run_id: str, result: dict[str, Any]) -> None:
        job = self._end_run(run_id)
        if job is None:
            return
        job.state = JobState.COMPLETED
        job.completed_at = now_ms()
        job.progress = 100.0
        job.result = result
        job.error = None
        self._finish(job)
        self._commit(job, EventName.COMPLETED, result=result, queuedAt=job.queued_at, startedAt=job.started_at,
                     completedAt=job.completed_at, duration=round(job.completed_at - job.started_at),
                     attempts=job.attempts)

    def fail(self, run_id: str, error: str, permanent: bool) -> None:
        job = self._end_run(run_id)
        if job is not None:
            self._fail(job, error, permanent)

    def run_lost(self, run_id: str, reason: str) -> None:
        """The executor running this attempt is gone: the job goes back to the queue."""
        job = self._end_run(run_id)
        if job is None:
            return
        log.warning("job stalled", jobId=job.id, videoId=job.video_id, reason=reason)
        job.attempts -= 1  # the attempt never finished: it does not count against the job
        self._commit(job, EventName.STALLED, reason=reason, attempt=job.attempts)
        self._enqueue(job)

    # internals

    def _fail(self, job: Job, error: str, permanent: bool) -> None:
        job.failed_at = now_ms()
        job.error = error
        decision = self.retries.on_failure(job.attempts, job.max_retries, permanent)
        if not decision.retry:
            job.state = JobState.DEAD
            self._finish(job)
            self._commit(job, EventName.PERMANENT_FAILURE, totalAttempts=job.attempts, error=error)
            return
        job.state = JobState.DELAYED
        job.retry_at = job.failed_at + decision.delay_ms
        self._commit(job, EventName.FAILED, error=error, currentAttempt=job.attempts - 1,
                     maxRetries=job.max_retries, retryInMs=decision.delay_ms, failedAt=job.failed_at)
        self._schedule_retry(job)

    def _schedule_retry(self, job: Job) -> None:
        delay_s = max(0.0, ((job.retry_at or 0) - time.time() * 1000) / 1000)
        loop = asyncio.get_running_loop()
        self._timers[job.id] = loop.call_later(delay_s, self._retry_now, job.id)

    def _retry_now(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        job = self.active.get(job_id)
        if job is not None and job.state is JobState.DELAYED:
            job.retry_at = None
            self._enqueue(job)

    def _enqueue(self, job: Job, keep_order: bool = False) -> None:
        if not keep_order:
            self._order += 1
            job.queue_order = self._order
        job.state = JobState.QUEUED
        job.queued_at = now_ms()
        if job.run_id:
            self._by_run.pop(job.run_id, None)
        job.run_id = None
        job.executor = None
        position = self.queue.push(job.id, job.priority)
        self._commit(job, EventName.QUEUED, queuePosition=position, queuedAt=job.queued_at,
                     attempt=job.attempts, priority=job.priority.value)
        self.on_work()

    def _end_run(self, run_id: str) -> Job | None:
        job_id = self._by_run.pop(run_id, None)
        job = self.active.get(job_id) if job_id else None
        if job is None or job.run_id != run_id or job.state is not JobState.RUNNING:
            return None
        job.run_id = None  # job.executor stays: the executor of the latest attempt
        return job

    def _track(self, job: Job) -> None:
        self.active[job.id] = job
        self._by_key[job.dedupe_key] = job.id
        if job.run_id:
            self._by_run[job.run_id] = job.id

    def _finish(self, job: Job) -> None:
        self.active.pop(job.id, None)
        self._by_key.pop(job.dedupe_key, None)
        timer = self._timers.pop(job.id, None)
        if timer:
            timer.cancel()

    def _commit(self, job: Job, name: EventName, **data: Any) -> None:
        event = self.bus.make(name.value, {"jobId": job.id, "type": job.type, "videoId": job.video_id, **data})
        self.store.save(job, [event])
        self.bus.publish(event)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
