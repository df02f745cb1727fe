"""Pipelines and their stages in the job store's SQLite file (tables of migration 6).

The writes are functions of the writer's connection that the engine runs inside its batch's transaction
(``JobEngine.write_in_batch``): a pipeline's step and the jobs it queues are stored together or not at all.
The reads use the same connection, on the primary's loop; pipelines are few next to jobs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from primary.store import page_rows, row_cursor

Write = Callable[[sqlite3.Connection], None]


class PipelineState(str, Enum):
    RUNNING = "running"  # a stage's job is queued, running or delayed
    REVIEW = "review"  # a stage with ``review`` completed: waits for an approval
    COMPLETED = "completed"
    FAILED = "failed"  # a stage's job is dead; retrying it resumes the pipeline (final once the job is removed)
    CANCELLED = "cancelled"  # cancelled (DELETE), or a stage's job was: final

    @property
    def is_live(self) -> bool:
        """Still able to move on (an approval, a retry): kept in the primary's memory."""
        return self in (PipelineState.RUNNING, PipelineState.REVIEW, PipelineState.FAILED)


PENDING = "pending"  # a stage whose job is not made yet
ACTIVE = "active"  # a stage whose job is queued, running or delayed (the job tells which)
REMOVED = "removed"  # a dead stage whose job was removed (retention, a discard): its pipeline failed for good
_LIVE = tuple(state.value for state in PipelineState if state.is_live)


@dataclass
class Stage:
    index: int
    type: str
    params: dict[str, Any]
    options: dict[str, Any]  # priority, timeout: as a job route takes them
    review: bool = False
    job_id: str | None = None
    state: str = PENDING  # pending, active, or the final state of its job (completed, dead, cancelled)


@dataclass
class Pipeline:
    id: str
    video_id: str
    owner: str
    stages: list[Stage]
    created_at: float
    updated_at: float
    name: str | None = None  # the configured pipeline an upload started
    state: PipelineState = PipelineState.RUNNING
    current: int = 0  # the stage in progress, waiting for review, or failed

    @property
    def stage(self) -> Stage:
        return self.stages[self.current]


def save(pipeline: Pipeline) -> Write:
    """The pipeline's rows as they are now (taken at once: the write runs when the batch is stored)."""
    head = (pipeline.id, pipeline.video_id, pipeline.owner, pipeline.name, pipeline.state.value, pipeline.current,
            pipeline.created_at, pipeline.updated_at)
    stages = [(pipeline.id, s.index, s.type, json.dumps(s.params), json.dumps(s.options), int(s.review), s.job_id,
               s.state) for s in pipeline.stages]

    def write(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO pipelines (id, video_id, owner, name, state, current, created_at, updated_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                   "current = excluded.current, updated_at = excluded.updated_at", head)
        db.executemany("INSERT INTO pipeline_stages (pipeline_id, idx, type, params, options, review, job_id, state) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pipeline_id, idx) DO UPDATE SET "
                       "job_id = excluded.job_id, state = excluded.state", stages)

    return write


def mark_removed(pipeline: Pipeline) -> Write:
    """The failed stage's dead job is gone: the stage says so; ``updated_at`` stays the time of the failure,
    from which the pipeline's retention counts."""
    key = (REMOVED, pipeline.id, pipeline.current)

    def write(db: sqlite3.Connection) -> None:
        db.execute("UPDATE pipeline_stages SET state = ? WHERE pipeline_id = ? AND idx = ?", key)

    return write


def delete_ended(state: PipelineState, before_ms: float, limit: int, removed: list[int]) -> Write:
    """Remove at most ``limit`` pipelines in final ``state`` last changed before ``before_ms``, oldest first,
    with their stages; a failed one only once its stage's job is removed. Appends how many went to ``removed``."""
    stranded = " AND EXISTS (SELECT 1 FROM pipeline_stages s WHERE s.pipeline_id = p.id AND s.idx = p.current " \
               "AND s.state = ?)" if state is PipelineState.FAILED else ""
    args = (state.value, before_ms, *([REMOVED] if stranded else []), limit)

    def write(db: sqlite3.Connection) -> None:
        ids = [(row[0],) for row in db.execute(
            f"SELECT id FROM pipelines p WHERE state = ? AND updated_at < ?{stranded} ORDER BY updated_at LIMIT ?",
            args)]
        db.executemany("DELETE FROM pipeline_stages WHERE pipeline_id = ?", ids)
        db.executemany("DELETE FROM pipelines WHERE id = ?", ids)
        removed.append(len(ids))

    return write


def delete_of_video(video_id: str) -> Write:
    def write(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM pipeline_stages WHERE pipeline_id IN (SELECT id FROM pipelines WHERE video_id = ?)",
                   (video_id,))
        db.execute("DELETE FROM pipelines WHERE video_id = ?", (video_id,))

    return write


class PipelineReads:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def get(self, pipeline_id: str) -> Pipeline | None:
        row = self._db.execute("SELECT * FROM pipelines WHERE id = ?", (pipeline_id,)).fetchone()
        return self._with_stages([row])[0] if row else None

    def live(self) -> list[Pipeline]:
        """Every pipeline that may still move on (running, waiting for review, failed), oldest first."""
        marks = ",".join("?" for _ in _LIVE)
        rows = self._db.execute(f"SELECT * FROM pipelines WHERE state IN ({marks}) ORDER BY created_at, id", _LIVE)
        return self._with_stages(rows.fetchall())

    def page(self, *, owner: str | None, video_id: str | None, limit: int, before: str | None) -> list[Pipeline]:
        """Newest first, from just after the ``before`` cursor (``created_at~id``, as the job lists')."""
        rows = page_rows(self._db, "pipelines", limit, before, owner=owner, video_id=video_id)
        return self._with_stages(rows.fetchall())

    def _with_stages(self, rows: list[sqlite3.Row]) -> list[Pipeline]:
        if not rows:
            return []
        marks = ",".join("?" for _ in rows)
        stages: dict[str, list[Stage]] = {row["id"]: [] for row in rows}
        for r in self._db.execute(f"SELECT * FROM pipeline_stages WHERE pipeline_id IN ({marks}) "
                                  "ORDER BY pipeline_id, idx", [row["id"] for row in rows]):
            stages[r["pipeline_id"]].append(Stage(r["idx"], r["type"], json.loads(r["params"]), json.loads(r["options"]),
                                                  bool(r["review"]), r["job_id"], r["state"]))
        return [Pipeline(row["id"], row["video_id"], row["owner"], stages[row["id"]], row["created_at"],
                         row["updated_at"], row["name"], PipelineState(row["state"]), row["current"]) for row in rows]


def cursor(pipeline: Pipeline) -> str:
    return row_cursor(pipeline.created_at, pipeline.id)

