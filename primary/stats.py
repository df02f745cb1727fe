"""Queue statistics over the last hour, kept in memory as the engine commits, never by scanning the store.

Counts by state and type come from the store's ``job_counts`` (kept by triggers on every write). The
hour is 60 buckets of a minute: jobs that ended (by final state), attempts started (their waits) and
completed attempts (their run times, in the minute the attempt started). Means are exact; p95 comes from
at most SAMPLES_PER_MINUTE samples a minute (the first ones of that minute), so it is exact below that
rate. At start the buckets are filled from the store's last hour (indexed, bounded reads).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cluster.protocol import EventName, JobState
from primary.jobs import Job
from primary.store import JobStore

WINDOW_MS = 3600_000
BUCKET_MS = 60_000
BUCKETS = WINDOW_MS // BUCKET_MS
SAMPLES_PER_MINUTE = 1000
_FINAL_EVENTS = {EventName.COMPLETED: JobState.COMPLETED, EventName.PERMANENT_FAILURE: JobState.DEAD,
                 EventName.CANCELLED: JobState.CANCELLED}


@dataclass
class _Minute:
    ended: Counter[str] = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)
    wait_count: int = 0
    wait_sum: float = 0.0
    runs: list[float] = field(default_factory=list)
    run_count: int = 0
    run_sum: float = 0.0

    def add_wait(self, wait_ms: float) -> None:
        self.wait_count += 1
        self.wait_sum += wait_ms
        if len(self.waits) < SAMPLES_PER_MINUTE:
            self.waits.append(wait_ms)

    def add_run(self, run_ms: float) -> None:
        self.run_count += 1
        self.run_sum += run_ms
        if len(self.runs) < SAMPLES_PER_MINUTE:
            self.runs.append(run_ms)


class WindowStats:
    def __init__(self) -> None:
        self._minutes: dict[int, _Minute] = {}

    def seed(self, store: JobStore, now_ms: float | None = None) -> None:
        """The last hour from the store, once at start."""
        since = (now_ms if now_ms is not None else time.time() * 1000) - WINDOW_MS
        for state, ended_at in store.ended_since(since):
            self._minute(ended_at).ended[state] += 1
        for started_at, wait_ms, run_ms in store.attempt_times_since(since):
            minute = self._minute(started_at)
            minute.add_wait(wait_ms)
            if run_ms is not None:
                minute.add_run(run_ms)

    def observe(self, job: Job, name: EventName) -> None:
        """The engine's hook, called after each transition it commits."""
        if name is EventName.STARTED and job.started_at is not None and job.queued_at is not None:
            self._minute(job.started_at).add_wait(max(0.0, job.started_at - job.queued_at))
        elif name is EventName.COMPLETED and job.completed_at is not None and job.started_at is not None:
            self._minute(job.started_at).add_run(max(0.0, job.completed_at - job.started_at))
        if name in _FINAL_EVENTS:
            self._minute(time.time() * 1000).ended[_FINAL_EVENTS[name].value] += 1

    def summary(self, now_ms: float | None = None) -> dict[str, Any]:
        now_ms = now_ms if now_ms is not None else time.time() * 1000
        current = int(now_ms // BUCKET_MS)
        self._forget_before(current - BUCKETS + 1)
        minutes = [self._minutes.get(m) or _Minute() for m in range(current - BUCKETS + 1, current + 1)]
        completed = sum(m.ended[JobState.COMPLETED.value] for m in minutes)
        dead = sum(m.ended[JobState.DEAD.value] for m in minutes)
        return {
            "jobsPerMinute": [m.ended[JobState.COMPLETED.value] for m in minutes],
            "meanRunMsPerMinute": [round(m.run_sum / m.run_count, 1) if m.run_count else None for m in minutes],
            "waitMs": _summary(sum(m.wait_count for m in minutes), sum(m.wait_sum for m in minutes),
                               [w for m in minutes for w in m.waits]),
            "runMs": _summary(sum(m.run_count for m in minutes), sum(m.run_sum for m in minutes),
                              [r for m in minutes for r in m.runs]),
            "successRate": round(completed / (completed + dead), 4) if completed + dead else None,
            "windowMinutes": BUCKETS,
        }

    def _minute(self, at_ms: float) -> _Minute:
        key = int(at_ms // BUCKET_MS)
        minute = self._minutes.get(key)
        if minute is None:
            minute = self._minutes[key] = _Minute()
            self._forget_before(key - BUCKETS + 1)
        return minute

    def _forget_before(self, first: int) -> None:
        for key in [k for k in self._minutes if k < first]:
            del self._minutes[key]


def queue_stats(store: JobStore, window: WindowStats, *, paused: bool, now_ms: float | None = None) -> dict[str, Any]:
    by_state = {state.value: 0 for state in JobState}
    by_type: dict[str, dict[str, int]] = {}
    for state, job_type, count in store.count_by_state_and_type():
        by_state[state] = by_state.get(state, 0) + count
        by_type.setdefault(job_type, {})[state] = count
    return {"paused": paused, "byState": by_state, "byType": by_type, **window.summary(now_ms)}


def _summary(count: int, total: float, samples: list[float]) -> dict[str, float | int | None]:
    if not count:
        return {"count": 0, "mean": None, "p95": None}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"count": count, "mean": round(total / count, 1), "p95": round(p95, 1)}
