"""Pipeline retention: finished pipelines removed by age, with the jobs' settings (``--keep-completed-s``,
``--keep-dead-s``, ``--keep-cancelled-s``; 0 keeps them). A completed or cancelled pipeline goes that long
after its last step; a failed one that long after it failed, and only once its dead job is removed (until
then a retry of the job may resume it). Each batch of DELETE_BATCH pipelines is one of the engine's
transactions, and the loop runs between batches, as for jobs (primary/retention.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cluster.config import ClusterConfig
from cluster.logs import get_logger
from primary import pipeline_store
from primary.engine import JobEngine
from primary.pipeline_store import PipelineState
from primary.retention import in_batches
from primary.store import DELETE_BATCH

log = get_logger()


@dataclass(frozen=True)
class PipelineKeep:
    """How long (seconds after its last step) a finished pipeline of ``state`` stays; 0: for good."""

    state: PipelineState
    max_age_s: float


def pipeline_keep_rules(config: ClusterConfig) -> tuple[PipelineKeep, ...]:
    return (PipelineKeep(PipelineState.COMPLETED, config.keep_completed_s),
            PipelineKeep(PipelineState.FAILED, config.keep_dead_s),
            PipelineKeep(PipelineState.CANCELLED, config.keep_cancelled_s))


class PipelineRetention:
    def __init__(self, engine: JobEngine, rules: tuple[PipelineKeep, ...]) -> None:
        self._engine = engine
        self._rules = rules

    async def sweep(self, now_ms: float | None = None) -> int:
        """Remove the finished pipelines the rules no longer keep; answer how many went."""
        now_ms = now_ms if now_ms is not None else time.time() * 1000
        removed = 0
        for rule in self._rules:
            if rule.max_age_s > 0:
                removed += await in_batches(lambda r=rule: self._one_batch(r.state, now_ms - r.max_age_s * 1000))
        if removed:
            log.info("finished pipelines removed by retention", removed=removed)
        return removed

    def _one_batch(self, state: PipelineState, before_ms: float) -> int:
        counts: list[int] = []
        with self._engine.batch():  # stored when it ends, the rows' count with it
            self._engine.write_in_batch(pipeline_store.delete_ended(state, before_ms, DELETE_BATCH, counts))
        return sum(counts)
