"""Pipeline retention: finished pipelines removed by age, with the jobs' settings (``--keep-completed-s``,
``--keep-dead-s``, ``--keep-cancelled-s``; 0 keeps them). A completed or cancelled pipeline goes that long
after its last step; a failed one that long after it failed, and only once its dead job is removed (until
then a retry of the job may resume it). Each batch of DELETE_BATCH pipelines is one of the engine's
transactions, and the loop runs between batches, as for jobs (primary/retention.py).
"""

from __future__ import annotations

import time

from cluster.config import ClusterConfig
from cluster.logs import get_logger
from cluster.protocol import JobState
from primary import pipeline_store
from primary.engine import JobEngine
from primary.pipeline_store import PipelineState
from primary.retention import in_batches, keep_rules
from primary.store import DELETE_BATCH

log = get_logger()

_ENDED_AS = {JobState.COMPLETED: PipelineState.COMPLETED, JobState.DEAD: PipelineState.FAILED,
             JobState.CANCELLED: PipelineState.CANCELLED}  # a pipeline that ended so keeps a job's age rule


def pipeline_keep_rules(config: ClusterConfig) -> dict[PipelineState, float]:
    """Final pipeline state -> how long (seconds after its last step) such a pipeline stays; 0: for good."""
    return {_ENDED_AS[rule.state]: rule.max_age_s for rule in keep_rules(config)}


class PipelineRetention:
    def __init__(self, engine: JobEngine, rules: dict[PipelineState, float]) -> None:
        self._engine = engine
        self._rules = rules

    async def sweep(self, now_ms: float | None = None) -> int:
        """Remove the finished pipelines the rules no longer keep; answer how many went."""
        now_ms = now_ms if now_ms is not None else time.time() * 1000
        removed = 0
        for state, max_age_s in self._rules.items():
            if max_age_s > 0:
                removed += await in_batches(lambda s=state, a=max_age_s: self._one_batch(s, now_ms - a * 1000))
        if removed:
            log.info("finished pipelines removed by retention", removed=removed)
        return removed

    def _one_batch(self, state: PipelineState, before_ms: float) -> int:
        counts: list[int] = []
        with self._engine.batch():  # stored when it ends, the rows' count with it
            self._engine.write_in_batch(pipeline_store.delete_ended(state, before_ms, DELETE_BATCH, counts))
        return sum(counts)
