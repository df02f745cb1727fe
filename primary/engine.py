"""The job engine: every job transition, written to the store before its event is published."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cluster.logs import get_logger
from cluster.protocol import TIMEOUT_ERROR, Event, EventName, JobState, Priority
from primary.control import RequestError
from primary.event_bus import EventBus
from primary.jobs import Attempt, Job, JobIdFactory, dedupe_key, now_ms
from primary.queue import JobQueue
from primary.retry import RetryTracker
from primary.store import JobStore
from primary.type_gates import PAUSED_TYPES_SETTING, TypeGates

log = get_logger()

PAUSED_SETTING = "queue_paused"


class EngineError(RequestError):
    """A job request the engine refuses (409 conflict, 503 shutting down)."""


class _Batch:
    """Transitions written together: the newest row of each job, every event and attempt, in order."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.events: list[Event] = []
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.after: list[Callable[[], None]] = []
        self.writes: list[Callable[[sqlite3.Connection], None]] = []  # other parts' rows (pipelines)

    def holds_anything(self) -> bool:
        return bool(self.jobs or self.events or self.after or self.writes)

    def add(self, job: Job, event: Event, attempt: Attempt | None) -> None:
        self.jobs.pop(job.id, None)  # re-inserted: rows are written in the order of their last change
        self.jobs[job.id] = job
        self.events.append(event)
        if attempt is not None:
            self.attempts[(attempt.job_id, attempt.number)] = attempt


class JobEngine:
    def __init__(self, store: JobStore, bus: EventBus, retries: RetryTracker) -> None:
        self.store = store
        self.bus = bus
        self.retries = retries
        self.queue = JobQueue()
        self.active: dict[str, Job] = {}  # every job not in a final state
        self.active_by_owner: Counter[str] = Counter()
        self.paused = store.get_setting(PAUSED_SETTING) == "1"
        self.gates = TypeGates(store.get_setting(PAUSED_TYPES_SETTING))  # paused types, concurrency limits
        self.draining = False
        self._by_run: dict[str, str] = {}
        self.completing: set[str] = set()  # accepted runs whose outputs are being made visible (dispatch.py)
        # hash of the dedupe key -> job id: an int costs less than the key; a match is checked against the job
        self._by_key: dict[int, str] = {}
        self._attempts: dict[str, Attempt] = {}  # run id -> the attempt it runs
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ids = JobIdFactory()
        self._order = store.max_queue_order()
        self._batch: _Batch | None = None
        self.on_work: Callable[[], None] = lambda: None
        self.on_cancel_run: Callable[[str], None] = lambda run_id: None
        self.on_commit: Callable[[Job, EventName], None] = lambda job, name: None  # metrics, after each transition
        # inside the transition's batch: what it writes (a pipeline's next stage) is stored in the same transaction
        self.on_transition: Callable[[Job, EventName], None] = lambda job, name: None

    # group commit

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Transitions made inside are written in one transaction when it ends, then their events are
        published and the ``after_commit`` actions run: nothing leaves the primary before it is stored."""
        if self._batch is not None:
            yield
            return
        self._batch = _Batch()
        try:
            yield
        finally:
            try:
                self.flush()
            finally:
                self._batch = None

    def flush(self) -> None:
        """Write what the open batch holds now (before a direct write to the store that must follow it)."""
        while self._batch is not None and self._batch.holds_anything():
            batch, self._batch = self._batch, _Batch()  # what the actions below do goes in the next one
            if batch.jobs or batch.events or batch.writes:
                self.store.save_batch(list(batch.jobs.values()), batch.events, list(batch.attempts.values()),
                                      batch.writes)
            for event in batch.events:
                self.bus.publish(event)
            for action in batch.after:
                action()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current transitions are stored (at once outside a batch)."""
        if self._batch is None:
            action()
        else:
            self._batch.after.append(action)

    def write_in_batch(self, write: Callable[[sqlite3.Connection], None]) -> None:
        """Another part's write (a pipeline's rows), stored in the same transaction as the current transitions."""
        with self.batch():
            assert self._batch is not None
            self._batch.writes.append(write)

    def publish_in_batch(self, name: str, data: dict[str, Any]) -> None:
        """Another part's event (a pipeline's), stored with its seq among the current transitions' events."""
        with self.batch():
            assert self._batch is not None
            self._batch.events.append(self.bus.make(name, data))

    # intake

    def submit(self, job_type: str, video_id: str, params: dict[str, Any], *, priority: Priority,
               timeout_s: float | None = None, owner: str = "",
               admit: Callable[[], None] = lambda: None) -> tuple[Job, bool]:
        """Queue a job; an identical job still queued, delayed or running is returned instead.
        ``admit`` runs before a new job is made, and may refuse it by raising (a per-user cap)."""
        self._refuse_when_draining()
        key = dedupe_key(job_type, video_id, params)
        existing = self._identical(key)
        if existing:
            return existing, False
        admit()
        policy = self.retries.policy(job_type)
        job = Job(id=self._ids.make(job_type, video_id), type=job_type, video_id=video_id, params=params,
                  owner=owner, priority=priority, timeout_s=timeout_s or policy.timeout_s,
                  max_retries=policy.max_retries)
        self._track(job, hash(key))
        self._enqueue(job, at=job.created_at)  # one float for both: a million queued jobs, 24 MB less
        return job, True

    def find_identical(self, job_type: str, video_id: str, params: dict[str, Any]) -> Job | None:
        """The job with these parameters that is still queued, delayed or running, if any."""
        return self._identical(dedupe_key(job_type, video_id, params))

    def _identical(self, key: str) -> Job | None:
        job_id = self._by_key.get(hash(key))
        job = self.active.get(job_id) if job_id else None
        return job if job is not None and job.dedupe_key == key else None  # not a hash collision

    def recover(self) -> None:
        """Restore unfinished jobs after a restart: running ones run again, delayed ones wait on."""
        for job in self._in_turns(self.store.unfinished_jobs()):
            self._ids.observe(job.id)
            self._track(job)
            if job.state is JobState.DELAYED:
                self._schedule_retry(job)
            elif job.state is JobState.RUNNING:
                log.info("job requeued after restart", jobId=job.id, videoId=job.video_id)
                job.attempts -= 1  # interrupted by the restart, not failed
                self._enqueue(job, keep_order=True)
            else:
                self.queue.push(job.id, job.priority, job.owner, job.type)
        log.info("jobs recovered", count=len(self.active), queued=len(self.queue), paused=self.paused)

    # dispatch

    def next_job(self) -> Job | None:
        if self.paused or self.draining:
            return None
        # counting the running jobs is needed only for types with a concurrency limit (most clusters have none)
        blocked = self.gates.blocked(self.running_by_type()) if self.gates.limits else self.gates.paused
        job_id = self.queue.pop(blocked)
        return self.active[job_id] if job_id else None

    def running_by_type(self) -> Counter[str]:
        """O(running jobs): at most one a connected executor."""
        return Counter(job.type for job_id in self._by_run.values() if (job := self.active.get(job_id)))

    def start(self, job: Job, executor: str) -> str:
        job.run_id = uuid.uuid4().hex
        job.executor = executor
        job.attempts += 1
        job.state = JobState.RUNNING
        job.started_at = now_ms()
        job.progress = 0.0
        self._by_run[job.run_id] = job.id
        attempt = Attempt(job.id, job.attempts, executor, job.queued_at, job.started_at)
        self._attempts[job.run_id] = attempt
        self._commit(job, EventName.STARTED, attempt, startedAt=job.started_at, queuedAt=job.queued_at,
                     attempt=job.attempts - 1)
        return job.run_id

    def job_for_run(self, run_id: str) -> Job | None:
        job_id = self._by_run.get(run_id)
        return self.active.get(job_id) if job_id else None

    @property
    def running(self) -> int:
        return len(self._by_run)

    # reports from executors

    def progress(self, run_id: str, percent: float, speed: float | None, eta_s: float | None) -> None:
        job = self.job_for_run(run_id)
        if job is None or job.state is not JobState.RUNNING or percent <= job.progress:
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
        attempt = self._end_attempt(job, run_id, "completed")
        self._finish(job)
        self._commit(job, EventName.COMPLETED, attempt, result=result, queuedAt=job.queued_at,
                     startedAt=job.started_at, completedAt=job.completed_at,
                     duration=round(job.completed_at - job.started_at), attempts=job.attempts)

    def fail(self, run_id: str, error: str, permanent: bool, command: str | None = None,
             stderr: str | None = None) -> None:
        job = self._end_run(run_id)
        if job is None:
            return
        outcome = "timeout" if error == TIMEOUT_ERROR else "failed"
        attempt = self._end_attempt(job, run_id, outcome, error, command, stderr)
        job.failed_at = now_ms()
        job.error = error
        decision = self.retries.on_failure(job.type, job.attempts, job.max_retries, permanent)
        if not decision.retry:
            job.state = JobState.DEAD
            self._finish(job)
            self._commit(job, EventName.PERMANENT_FAILURE, attempt, totalAttempts=job.attempts, error=error)
            return
        job.state = JobState.DELAYED
        job.retry_at = job.failed_at + decision.delay_ms
        self._commit(job, EventName.FAILED, attempt, error=error, currentAttempt=job.attempts - 1,
                     maxRetries=job.max_retries, retryInMs=decision.delay_ms, failedAt=job.failed_at)
        self._schedule_retry(job)

    def run_lost(self, run_id: str, reason: str) -> None:
        """The executor running this attempt is gone: the job goes back to the queue."""
        job = self._end_run(run_id)
        if job is None:
            return
        log.warning("job stalled", jobId=job.id, videoId=job.video_id, reason=reason)
        attempt = self._end_attempt(job, run_id, "stalled", reason)
        job.attempts -= 1  # the attempt never finished: it does not count against the job
        self._commit(job, EventName.STALLED, attempt, executor=job.executor, reason=reason, attempt=job.attempts)
        self._enqueue(job)

    # requests

    def cancel(self, job_id: str) -> Job:
        job = self.active.get(job_id)
        if job is None:
            raise EngineError(409, f"job {job_id} is not queued, delayed or running")
        self.check_cancellable(job_id)
        if job.state is JobState.RUNNING and job.run_id:
            run_id = job.run_id
            self._end_run(run_id)
            attempt = self._end_attempt(job, run_id, "cancelled")
            self.on_cancel_run(run_id)
        else:
            attempt = None
            self.queue.remove(job.id)
        job.state = JobState.CANCELLED
        job.cancelled_at = now_ms()
        self._finish(job)
        self._commit(job, EventName.CANCELLED, attempt, cancelledAt=job.cancelled_at)
        return job

    def check_cancellable(self, job_id: str) -> None:
        """A job whose outputs are being made visible is completing: a cancel now would come after them."""
        job = self.active.get(job_id)
        if job is not None and job.run_id is not None and job.run_id in self.completing:
            raise EngineError(409, f"job {job_id} is completing (its outputs are being made visible): "
                                   "it can no longer be cancelled")

    def retry(self, job: Job) -> Job:
        """Put a dead or cancelled job back with fresh attempts."""
        self._refuse_when_draining()
        if job.state not in (JobState.DEAD, JobState.CANCELLED):
            raise EngineError(409, f"job {job.id} is {job.state.value}: only dead or cancelled jobs are retried")
        identical = self.find_identical(job.type, job.video_id, job.params)
        if identical is not None:
            raise EngineError(409, f"an identical job is queued already: {identical.id}")
        job.attempts = 0
        job.progress = 0.0
        job.error = job.result = None
        job.completed_at = job.failed_at = job.cancelled_at = job.retry_at = None
        self._track(job)
        self._enqueue(job)
        return job

    def pause(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        name = "queue:paused" if paused else "queue:resumed"
        self.flush()  # the events before this one are stored first: seqs are written in order
        event = self.bus.make(name, {"paused": paused, "at": now_ms(), "queued": len(self.queue)})
        self.store.set_setting(PAUSED_SETTING, "1" if paused else "0", [event])
        self.bus.publish(event)
        if not paused:
            self.on_work()

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise EngineError(503, "the cluster is shutting down")

    # internals

    def _in_turns(self, jobs: list[Job]) -> list[Job]:
        """The unfinished jobs (in queue order), each (level, user)'s together, the users of each level in
        the order of their turns: pushed so, the queue's rings are as they were before the restart. A
        user's turn came at its latest start, or when its first unfinished job was queued if later."""
        groups: dict[tuple[Priority, str], list[Job]] = {}
        for job in jobs:
            groups.setdefault((job.priority, job.owner), []).append(job)
        heads = {key: next((j.queued_at or 0.0 for j in group if j.state is not JobState.DELAYED), None)
                 for key, group in groups.items()}
        starts = self.store.last_starts([key for key, head in heads.items() if head is not None])
        order = {key: n for n, key in enumerate(groups)}  # ties: the user whose first job came first
        turns = sorted(groups, key=lambda key: (max(starts.get(key) or 0.0, heads[key] or 0.0), order[key]))
        return [job for key in turns for job in groups[key]]

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

    def _enqueue(self, job: Job, keep_order: bool = False, at: float | None = None) -> None:
        if not keep_order:
            self._order += 1
            job.queue_order = self._order
        job.state = JobState.QUEUED
        job.queued_at = at if at is not None else now_ms()
        if job.run_id:
            self._by_run.pop(job.run_id, None)
        job.run_id = None
        job.executor = None
        position = self.queue.push(job.id, job.priority, job.owner, job.type)
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

    def _end_attempt(self, job: Job, run_id: str | None, outcome: str, error: str | None = None,
                     command: str | None = None, stderr: str | None = None) -> Attempt:
        attempt = self._attempts.pop(run_id or "", None) or Attempt(
            job.id, job.attempts, job.executor, job.queued_at, job.started_at or now_ms())
        attempt.ended_at = now_ms()
        attempt.outcome, attempt.error, attempt.command, attempt.stderr = outcome, error, command, stderr
        return attempt

    def _track(self, job: Job, key_hash: int | None = None) -> None:
        if job.id not in self.active:
            self.active_by_owner[job.owner] += 1
        self.active[job.id] = job
        self._by_key[key_hash if key_hash is not None else hash(job.dedupe_key)] = job.id
        if job.run_id:
            self._by_run[job.run_id] = job.id

    def _finish(self, job: Job) -> None:
        if self.active.pop(job.id, None) is not None:
            self.active_by_owner[job.owner] -= 1
            if not self.active_by_owner[job.owner]:
                del self.active_by_owner[job.owner]
        if self._by_key.get(hash(job.dedupe_key)) == job.id:
            del self._by_key[hash(job.dedupe_key)]
        timer = self._timers.pop(job.id, None)
        if timer:
            timer.cancel()

    def _commit(self, job: Job, name: EventName, record: Attempt | None = None, /, **data: Any) -> None:
        base = {"jobId": job.id, "type": job.type, "videoId": job.video_id, "userId": job.owner}
        event = self.bus.make(name.value, {**base, **data})
        with self.batch():
            assert self._batch is not None
            self._batch.add(job, event, record)
            self.on_transition(job, name)
        self.on_commit(job, name)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
