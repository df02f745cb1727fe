"""Retention: finished jobs (and their attempts) removed by age and by count per final state, like
BullMQ's removeOnComplete / removeOnFail. A periodic task on the primary's loop; it removes DELETE_BATCH
rows per transaction and yields to the loop between batches, so neither the writer nor the loop is held.
The sweeps of other rows whose end follows their jobs' (``also``: finished pipelines) run after each sweep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cluster.config import ClusterConfig
from cluster.logs import get_logger
from cluster.protocol import JobState
from primary.store import DELETE_BATCH, JobStore

log = get_logger()

RETENTION_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Keep:
    """How long (seconds after it ended) and how many (the newest by creation) jobs of a final state stay;
    0 means no limit of that kind."""

    state: JobState
    max_age_s: float = 0.0
    max_count: int = 0


def keep_rules(config: ClusterConfig) -> tuple[Keep, ...]:
    return (Keep(JobState.COMPLETED, config.keep_completed_s, config.keep_completed),
            Keep(JobState.DEAD, config.keep_dead_s, config.keep_dead),
            Keep(JobState.CANCELLED, config.keep_cancelled_s, config.keep_cancelled))


class Retention:
    def __init__(self, store: JobStore, rules: tuple[Keep, ...], interval_s: float = RETENTION_INTERVAL_S,
                 also: Sequence[Callable[[], Awaitable[int]]] = ()) -> None:
        self._store = store
        self._rules = rules
        self._interval_s = interval_s
        self._also = also

    async def run(self) -> None:
        while True:
            await self.sweep()
            for sweep in self._also:  # after the jobs: a failed pipeline goes once its dead job has
                await sweep()
            await asyncio.sleep(self._interval_s)

    async def sweep(self, now_ms: float | None = None) -> int:
        """Remove what the rules no longer keep; answer how many jobs went."""
        now_ms = now_ms if now_ms is not None else time.time() * 1000
        removed = 0
        for rule in self._rules:
            if rule.max_age_s > 0:
                removed += await in_batches(lambda r=rule: self._store.delete_ended(
                    r.state.value, now_ms - r.max_age_s * 1000, DELETE_BATCH))
            if rule.max_count > 0:
                removed += await in_batches(lambda r=rule: self._store.delete_oldest(
                    r.state.value, min(DELETE_BATCH, self._excess(r))))
        if removed:
            log.info("finished jobs removed by retention", removed=removed)
        return removed

    def _excess(self, rule: Keep) -> int:
        return max(0, self._store.count_by_state().get(rule.state.value, 0) - rule.max_count)


async def in_batches(delete_one_batch: Callable[[], int]) -> int:
    """Call ``delete_one_batch`` (which removes at most DELETE_BATCH rows) until it removes fewer, letting the
    loop run between batches; answer how many rows went."""
    removed = 0
    while True:
        count = delete_one_batch()
        removed += count
        if count < DELETE_BATCH:
            return removed
        await asyncio.sleep(0)  # let the loop run between batches
