"""Queue statistics over the last hour, kept in memory as the engine commits, never by scanning the store.

Counts by state and type come from the store's ``job_counts`` (kept by triggers on every write). The
hour is kept a second at a time: jobs that ended (by final state), attempts started (their waits) and
completed attempts (their run times, at the second the attempt started); the answer folds the seconds
into 60 minutes counted back from now. Counts and means are exact; p95 comes from the newest
MAX_SAMPLES waits and runs of the hour. At start the hour is filled from the store (indexed, bounded reads).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from cluster.protocol import EventName, JobState
from primary.jobs import Job
from primary.metrics import FINAL_EVENTS
from primary.store import JobStore

WINDOW_MS = 3600_000
BUCKET_MS = 60_000
BUCKETS = WINDOW_MS // BUCKET_MS
MAX_SAMPLES = 10_000


@dataclass
class _Second:
    ended: Counter[str] = field(default_factory=Counter)
    wait_count: int = 0
    wait_sum: float = 0.0
    run_count: int = 0
    run_sum: float = 0.0


class WindowStats:
    def __init__(self) -> None:
        self._seconds: dict[int, _Second] = {}
        self._waits: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)  # (at ms, value ms)
        self._runs: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)

    def seed(self, store: JobStore, now_ms: float | None = None) -> None:
        """The last hour from the store, once at start."""
        since = (now_ms if now_ms is not None else time.time() * 1000) - WINDOW_MS
        for state, ended_at in store.ended_since(since):
            self._second(ended_at).ended[state] += 1
        for started_at, wait_ms, run_ms in sorted(store.attempt_times_since(since, MAX_SAMPLES)):
            self._add_wait(started_at, wait_ms)
            if run_ms is not None:
                self._add_run(started_at, run_ms)

    def observe(self, job: Job, name: EventName) -> None:
        """The engine's hook, called after each transition it commits."""
        if name is EventName.STARTED and job.started_at is not None and job.queued_at is not None:
            self._add_wait(job.started_at, max(0.0, job.started_at - job.queued_at))
        elif name is EventName.COMPLETED and job.completed_at is not None and job.started_at is not None:
            self._add_run(job.started_at, max(0.0, job.completed_at - job.started_at))
        if name in FINAL_EVENTS:
            self._second(time.time() * 1000).ended[FINAL_EVENTS[name].value] += 1

    def summary(self, now_ms: float | None = None) -> dict[str, Any]:
        now_ms = now_ms if now_ms is not None else time.time() * 1000
        since = now_ms - WINDOW_MS
        self._forget_before(since)
        completed, runs_sum, runs_n = [0] * BUCKETS, [0.0] * BUCKETS, [0] * BUCKETS
        ended: Counter[str] = Counter()
        waits = [0, 0.0]
        runs = [0, 0.0]
        for second, counts in self._seconds.items():
            index = min(BUCKETS - 1, max(0, int((second * 1000 - since) // BUCKET_MS)))
            completed[index] += counts.ended[JobState.COMPLETED.value]
            ended.update(counts.ended)
            runs_sum[index] += counts.run_sum
            runs_n[index] += counts.run_count
            waits[0] += counts.wait_count
            waits[1] += counts.wait_sum
            runs[0] += counts.run_count
            runs[1] += counts.run_sum
        done, dead = ended[JobState.COMPLETED.value], ended[JobState.DEAD.value]
        return {
            "jobsPerMinute": completed,
            "meanRunMsPerMinute": [round(total / n, 1) if n else None for total, n in zip(runs_sum, runs_n,
                                                                                          strict=True)],
            "waitMs": _summary(int(waits[0]), waits[1], [v for at, v in self._waits if at >= since]),
            "runMs": _summary(int(runs[0]), runs[1], [v for at, v in self._runs if at >= since]),
            "successRate": round(done / (done + dead), 4) if done + dead else None,
            "windowMinutes": BUCKETS,
        }

    def _add_wait(self, at_ms: float, wait_ms: float) -> None:
        second = self._second(at_ms)
        second.wait_count += 1
        second.wait_sum += wait_ms
        self._waits.append((at_ms, wait_ms))

    def _add_run(self, at_ms: float, run_ms: float) -> None:
        second = self._second(at_ms)
        second.run_count += 1
        second.run_sum += run_ms
        self._runs.append((at_ms, run_ms))

    def _second(self, at_ms: float) -> _Second:
        key = int(at_ms // 1000)
        second = self._seconds.get(key)
        if second is None:
            second = self._seconds[key] = _Second()
            if len(self._seconds) > 2 * WINDOW_MS // 1000:
                self._forget_before(time.time() * 1000 - WINDOW_MS)
        return second

    def _forget_before(self, since_ms: float) -> None:
        first = int(since_ms // 1000)
        for key in [k for k in self._seconds if k < first]:
            del self._seconds[key]


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
