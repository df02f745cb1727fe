"""Pipelines: a video's stages run one after another, each a job queued when the one before completes.

The engine calls ``on_transition`` inside the batch of every job transition; what a pipeline does then
(its next stage's job through ``engine.submit``, its rows, its event) joins that batch, so the completing
job, the pipeline's step and the next job are stored in one transaction: a SIGKILL at any moment leaves
either none of them or all of them. ``recover`` (at start, after the engine's) checks each live pipeline
against its stage's job and finishes a step the store shows half-taken (a stage completed while the
primary was draining, when no new job may be queued).

A stage with ``review`` waits, once completed, for ``approve``. A dead stage fails the pipeline; retrying
its job resumes it, until the job is removed (retention, a discard): then the pipeline has failed for good,
its stage shows ``removed``. A cancelled stage cancels the pipeline for good (retrying that job runs it
alone); so does ``cancel``, which cancels the stage's job in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from cluster.logs import get_logger
from cluster.protocol import EventName, JobState, PipelineEvent, Priority
from primary import pipeline_store
from primary.control import RequestError
from primary.engine import EngineError, JobEngine
from primary.jobs import Job, now_ms
from primary.pipeline_store import ACTIVE, PENDING, REMOVED, Pipeline, PipelineReads, PipelineState, Stage
from primary.store import JobStore

log = get_logger()


class Pipelines:
    def __init__(self, engine: JobEngine, store: JobStore, reads: PipelineReads) -> None:
        self._engine = engine
        self._store = store
        self.reads = reads
        self.live: dict[str, Pipeline] = {}  # running, waiting for review, failed (its dead job still kept)
        self._by_job: dict[str, set[str]] = {}  # a current stage's job id -> the pipelines waiting on it
        engine.on_transition = self.on_transition

    # requests

    def create(self, video_id: str, owner: str, stages: list[Stage], name: str | None = None,
               admit: Callable[[], None] = lambda: None) -> Pipeline:
        """Queue the first stage's job (``admit`` may refuse it) and store the pipeline with it."""
        at = now_ms()
        pipeline = Pipeline(uuid.uuid4().hex[:16], video_id, owner, stages, at, at, name)
        job = self._submit(pipeline, stages[0], admit)
        self._attach(pipeline, job)
        self._save(pipeline)
        self._publish(pipeline, PipelineEvent.STARTED)
        log.info("pipeline started", pipelineId=pipeline.id, videoId=video_id, stages=len(stages), name=name)
        return pipeline

    def approve(self, pipeline: Pipeline) -> Pipeline:
        if pipeline.state is not PipelineState.REVIEW or pipeline.id not in self.live:
            raise RequestError(409, f"pipeline {pipeline.id} is {pipeline.state.value}, not waiting for review")
        if pipeline.current + 1 < len(pipeline.stages):
            nxt = pipeline.stages[pipeline.current + 1]
            job = self._submit(pipeline, nxt)  # 503 while draining: nothing changed, approve again later
            pipeline.current += 1
            pipeline.state = PipelineState.RUNNING
            self._attach(pipeline, job)
            self._save(pipeline)
        else:
            self._complete(pipeline)
        log.info("pipeline stage approved", pipelineId=pipeline.id, stage=pipeline.current)
        return pipeline

    def cancel(self, pipeline: Pipeline) -> Pipeline:
        """Stop the pipeline for good: its stage's queued, delayed or running job is cancelled (its ffmpeg
        killed) unless another pipeline waits on it too; the job's end, the pipeline's and its event are
        stored in one transaction. 409 once it has ended."""
        if pipeline.id not in self.live:
            raise RequestError(409, f"pipeline {pipeline.id} is {pipeline.state.value}: it has ended")
        with self._engine.batch():
            stage = pipeline.stage
            self._retire(pipeline)  # first: the job's cancellation below is not taken for a step of its own
            if stage.state == ACTIVE:
                job_id = stage.job_id or ""
                if job_id in self._engine.active and not self._by_job.get(job_id):
                    self._engine.cancel(job_id)
                stage.state = JobState.CANCELLED.value
            pipeline.state = PipelineState.CANCELLED
            self._save(pipeline)
            self._publish(pipeline, PipelineEvent.CANCELLED)
        log.info("pipeline cancelled", pipelineId=pipeline.id, stage=pipeline.current)
        return pipeline

    def jobs_removed(self, job_ids: list[str]) -> None:
        """The store removed these jobs (``JobStore.on_jobs_deleted``): a failed pipeline whose dead job went
        can no longer resume; it leaves memory and its stage shows ``removed``."""
        for job_id in job_ids:
            for pipeline_id in list(self._by_job.get(job_id, ())):
                pipeline = self.live[pipeline_id]
                if pipeline.state is PipelineState.FAILED:
                    self._strand(pipeline)

    def _strand(self, pipeline: Pipeline) -> None:
        self._retire(pipeline)
        pipeline.stage.state = REMOVED
        self._engine.write_in_batch(pipeline_store.mark_removed(pipeline))
        log.info("pipeline failed for good: its dead job was removed", pipelineId=pipeline.id,
                 jobId=pipeline.stage.job_id)

    def forget_video(self, video_id: str) -> None:
        """The video is being deleted: its pipelines go with it (in the batch that cancels its jobs)."""
        for pipeline in [p for p in self.live.values() if p.video_id == video_id]:
            self._retire(pipeline)
        self._engine.write_in_batch(pipeline_store.delete_of_video(video_id))

    def find(self, pipeline_id: str) -> Pipeline | None:
        live = self.live.get(pipeline_id)
        if live is not None:
            return live
        self._engine.flush()  # a pipeline that ended in this batch is read as stored
        return self.reads.get(pipeline_id)

    def page(self, *, owner: str | None, video_id: str | None, limit: int, before: str | None) -> list[Pipeline]:
        """Newest first; what this batch has done so far is stored first, so the page shows it."""
        self._engine.flush()
        found = self.reads.page(owner=owner, video_id=video_id, limit=limit, before=before)
        return [self.live.get(p.id, p) for p in found]

    def view(self, pipeline: Pipeline) -> dict[str, Any]:
        """As the API shows it; an active stage shows its job's state now."""
        return {"pipelineId": pipeline.id, "videoId": pipeline.video_id, "owner": pipeline.owner,
                "name": pipeline.name, "state": pipeline.state.value, "currentStage": pipeline.current,
                "createdAt": pipeline.created_at, "updatedAt": pipeline.updated_at,
                "stages": [self._stage_view(stage) for stage in pipeline.stages]}

    def _stage_view(self, stage: Stage) -> dict[str, Any]:
        state = stage.state
        if state == ACTIVE:
            job = self._engine.active.get(stage.job_id or "")
            state = job.state.value if job is not None else JobState.QUEUED.value
        return {"index": stage.index, "type": stage.type, "params": stage.params, "review": stage.review,
                "jobId": stage.job_id, "state": state, **stage.options}

    # the engine's transitions

    def on_transition(self, job: Job, name: EventName) -> None:
        """Every job's every transition (each progress report too): nothing to do unless a pipeline waits on it."""
        waiting = self._by_job.get(job.id)
        if not waiting:
            return
        for pipeline_id in list(waiting):  # a copy: a step detaches the pipeline from the job
            pipeline = self.live[pipeline_id]
            if name is EventName.COMPLETED:
                self._stage_completed(pipeline)
            elif name is EventName.PERMANENT_FAILURE:
                self._stage_dead(pipeline)
            elif name is EventName.CANCELLED:
                self._stage_cancelled(pipeline)
            elif name is EventName.QUEUED and pipeline.state is PipelineState.FAILED:
                self._resume(pipeline)

    def _stage_completed(self, pipeline: Pipeline) -> None:
        stage = pipeline.stage
        stage.state = JobState.COMPLETED.value
        self._detach(pipeline, stage)
        self._publish(pipeline, PipelineEvent.STAGE_COMPLETED)
        if stage.review:
            pipeline.state = PipelineState.REVIEW
            self._save(pipeline)
            self._publish(pipeline, PipelineEvent.REVIEW_NEEDED)
        else:
            self._advance(pipeline)

    def _advance(self, pipeline: Pipeline) -> None:
        """The current stage completed: queue the next one, or complete the pipeline."""
        if pipeline.current + 1 == len(pipeline.stages):
            self._complete(pipeline)
            return
        try:
            job = self._submit(pipeline, pipeline.stages[pipeline.current + 1])
        except EngineError as e:  # draining: stored as it is, the next start queues the stage (recover)
            log.warning("pipeline waits for the next start", pipelineId=pipeline.id, reason=str(e))
            self._save(pipeline)
            return
        pipeline.current += 1
        self._attach(pipeline, job)
        self._save(pipeline)

    def _complete(self, pipeline: Pipeline) -> None:
        pipeline.state = PipelineState.COMPLETED
        self._save(pipeline)
        self._publish(pipeline, PipelineEvent.COMPLETED)
        self._retire(pipeline)
        log.info("pipeline completed", pipelineId=pipeline.id, videoId=pipeline.video_id)

    def _stage_dead(self, pipeline: Pipeline) -> None:
        pipeline.stage.state = JobState.DEAD.value
        pipeline.state = PipelineState.FAILED
        self._save(pipeline)  # the job stays attached: its retry resumes the pipeline
        self._publish(pipeline, PipelineEvent.FAILED)
        log.info("pipeline failed", pipelineId=pipeline.id, stage=pipeline.current)

    def _resume(self, pipeline: Pipeline) -> None:
        pipeline.stage.state = ACTIVE
        pipeline.state = PipelineState.RUNNING
        self._save(pipeline)
        self._publish(pipeline, PipelineEvent.RESUMED)
        log.info("pipeline resumed", pipelineId=pipeline.id, stage=pipeline.current)

    def _stage_cancelled(self, pipeline: Pipeline) -> None:
        pipeline.stage.state = JobState.CANCELLED.value
        pipeline.state = PipelineState.CANCELLED
        self._detach(pipeline, pipeline.stage)
        self._save(pipeline)
        self._publish(pipeline, PipelineEvent.CANCELLED)
        self._retire(pipeline)

    # start-up

    def recover(self) -> None:
        """Load the live pipelines (after ``engine.recover``) and repair any step left half-taken."""
        with self._engine.batch():
            for pipeline in self.reads.live():
                stage = pipeline.stage
                if pipeline.state is PipelineState.FAILED and stage.state == REMOVED:
                    continue  # failed for good: only its retention is left
                self.live[pipeline.id] = pipeline
                if stage.job_id and stage.state in (ACTIVE, JobState.DEAD.value):
                    self._by_job.setdefault(stage.job_id, set()).add(pipeline.id)
                if pipeline.state is PipelineState.RUNNING:
                    self._repair(pipeline)
                elif pipeline.state is PipelineState.FAILED and self._store.get_job(stage.job_id or "") is None:
                    self._strand(pipeline)  # removed while the primary was stopping, before the step was stored
        log.info("pipelines recovered", live=len(self.live))

    def _repair(self, pipeline: Pipeline) -> None:
        """A running pipeline whose stage's job is no longer active: take the step its end should have."""
        stage = pipeline.stage
        if stage.state == PENDING:  # never left so by a transaction; repaired all the same
            log.warning("pipeline repaired: stage had no job", pipelineId=pipeline.id, stage=stage.index)
            self._attach(pipeline, self._submit(pipeline, stage))
            self._save(pipeline)
            return
        if stage.job_id in self._engine.active:
            return
        job = self._store.get_job(stage.job_id or "")
        ended = stage.state if stage.state != ACTIVE else (job.state.value if job is not None else None)
        log.warning("pipeline repaired", pipelineId=pipeline.id, stage=stage.index, jobState=ended)
        if ended == JobState.COMPLETED.value:
            if stage.state == ACTIVE:
                self._stage_completed(pipeline)
            else:  # the stage completed and the next one was not queued (the primary was draining)
                self._advance(pipeline)
        elif ended == JobState.DEAD.value:
            self._stage_dead(pipeline)
        else:  # cancelled, or the job is gone (removed by hand): the pipeline cannot go on
            self._stage_cancelled(pipeline)

    # helpers

    def _submit(self, pipeline: Pipeline, stage: Stage, admit: Callable[[], None] = lambda: None) -> Job:
        options = stage.options
        job, _created = self._engine.submit(
            stage.type, pipeline.video_id, stage.params, priority=Priority(options.get("priority") or "normal"),
            timeout_s=options.get("timeout"), owner=pipeline.owner, admit=admit)
        return job

    def _attach(self, pipeline: Pipeline, job: Job) -> None:
        stage = pipeline.stage
        stage.job_id = job.id  # a new job, or an identical one still active: the stage waits on it
        stage.state = ACTIVE
        self._by_job.setdefault(job.id, set()).add(pipeline.id)
        self.live[pipeline.id] = pipeline

    def _detach(self, pipeline: Pipeline, stage: Stage) -> None:
        waiting = self._by_job.get(stage.job_id or "")
        if waiting is not None:
            waiting.discard(pipeline.id)
            if not waiting:
                del self._by_job[stage.job_id or ""]

    def _retire(self, pipeline: Pipeline) -> None:
        self._detach(pipeline, pipeline.stage)
        self.live.pop(pipeline.id, None)

    def _save(self, pipeline: Pipeline) -> None:
        pipeline.updated_at = now_ms()
        self._engine.write_in_batch(pipeline_store.save(pipeline))

    def _publish(self, pipeline: Pipeline, name: PipelineEvent) -> None:
        stage = pipeline.stage
        self._engine.publish_in_batch(name.value, {
            "pipelineId": pipeline.id, "videoId": pipeline.video_id, "userId": pipeline.owner,
            "jobId": stage.job_id, "stage": stage.index, "type": stage.type, "state": pipeline.state.value,
            "stages": len(pipeline.stages)})
