"""Queue statistics over the last hour, computed from the store."""

from __future__ import annotations

import math
import time
from typing import Any

from cluster.protocol import JobState
from primary.store import JobStore

WINDOW_MS = 3600_000
BUCKET_MS = 60_000


def queue_stats(store: JobStore, *, paused: bool, now_ms: float | None = None) -> dict[str, Any]:
    now_ms = now_ms if now_ms is not None else time.time() * 1000
    since = now_ms - WINDOW_MS
    by_state = {state.value: 0 for state in JobState}
    by_type: dict[str, dict[str, int]] = {}
    for state, job_type, count in store.count_by_state_and_type():
        by_state[state] = by_state.get(state, 0) + count
        by_type.setdefault(job_type, {})[state] = count
    ended = store.ended_since(since)
    times = store.attempt_times_since(since)
    waits, runs = _split([(wait, run) for _, wait, run in times])
    completed = sum(1 for state, _ in ended if state == JobState.COMPLETED.value)
    dead = sum(1 for state, _ in ended if state == JobState.DEAD.value)
    return {
        "paused": paused,
        "byState": by_state,
        "byType": by_type,
        "jobsPerMinute": _per_minute([at for state, at in ended if state == JobState.COMPLETED.value], since),
        "meanRunMsPerMinute": _mean_per_minute([(at, run) for at, _, run in times if run is not None], since),
        "waitMs": _summary(waits),
        "runMs": _summary(runs),
        "successRate": round(completed / (completed + dead), 4) if completed + dead else None,
        "windowMinutes": WINDOW_MS // BUCKET_MS,
    }


def _split(times: list[tuple[float, float | None]]) -> tuple[list[float], list[float]]:
    return [wait for wait, _ in times], [run for _, run in times if run is not None]


def _per_minute(times: list[float], since: float) -> list[int]:
    buckets = [0] * (WINDOW_MS // BUCKET_MS)
    for at in times:
        index = min(len(buckets) - 1, int((at - since) // BUCKET_MS))
        buckets[index] += 1
    return buckets


def _mean_per_minute(samples: list[tuple[float, float]], since: float) -> list[float | None]:
    sums = [0.0] * (WINDOW_MS // BUCKET_MS)
    counts = [0] * len(sums)
    for at, value in samples:
        index = min(len(sums) - 1, max(0, int((at - since) // BUCKET_MS)))
        sums[index] += value
        counts[index] += 1
    return [round(total / n, 1) if n else None for total, n in zip(sums, counts, strict=True)]


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), 1), "p95": round(p95, 1)}
