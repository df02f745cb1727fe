"""The control operations on pipelines; each caller sees only its own (an administrator: all).

Every stage is checked when the pipeline is asked for, as a job route checks its job (``JobOps.job_request``),
so a pipeline never stops half-way on a parameter it could have refused at once. Another user's pipeline
is answered 404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any

from cluster import pipeline_spec
from cluster.kinds import KINDS
from primary.control import Handler, RequestError
from primary.job_ops import Caller, JobOps
from primary.pipeline_store import Pipeline, Stage, cursor
from primary.pipelines import Pipelines
from primary.store import CursorError

MAX_PAGE = 1000


class PipelineConfigError(ValueError):
    """A ``--pipeline`` the cluster cannot start with."""


def check_named(named: dict[str, list[dict[str, Any]]]) -> None:
    """Each configured pipeline names job kinds this cluster has (their parameters are checked against
    each upload, when it starts one)."""
    for name, stages in named.items():
        unknown = [stage["type"] for stage in stages if stage["type"] not in KINDS]
        if unknown:
            raise PipelineConfigError(f"--pipeline {name!r}: unknown job type {unknown[0]!r}")


class PipelineOps:
    def __init__(self, pipelines: Pipelines, job_ops: JobOps, named: dict[str, list[dict[str, Any]]]) -> None:
        self._pipelines = pipelines
        self._jobs = job_ops
        self._named = named

    def handlers(self) -> dict[str, Handler]:
        return {
            "create_pipeline": self.create,
            "get_pipeline": self.get,
            "list_pipelines": self.list,
            "approve_pipeline": self.approve,
            "cancel_pipeline": self.cancel,
        }

    def create(self, args: dict[str, Any]) -> dict[str, Any]:
        """``stages``, or ``name``: one of the config's named pipelines (an upload's ``?pipeline=``)."""
        caller = Caller(args)
        name = args.get("name")
        if name is not None:
            if name not in self._named:
                raise RequestError(400, f"no pipeline named {str(name)[:64]!r}")
            raw = self._named[name]
        else:
            raw = args.get("stages")
        try:
            raw = pipeline_spec.check_stages(raw)
        except pipeline_spec.InvalidPipeline as e:
            raise RequestError(400, str(e)) from e
        video = self._jobs.visible_video(caller, str(args.get("videoId")))
        stages = [self._stage(caller, video, index, stage) for index, stage in enumerate(raw)]
        pipeline = self._pipelines.create(video["videoId"], video["owner"], stages, name,
                                          admit=lambda: self._jobs.check_active_jobs(video["owner"]))
        return {"pipelineId": pipeline.id, "firstJobId": pipeline.stages[0].job_id}

    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._pipelines.view(self._visible(args))

    def list(self, args: dict[str, Any]) -> dict[str, Any]:
        caller = Caller(args)
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE:
            raise RequestError(400, f"limit must be between 1 and {MAX_PAGE}")
        video_id, before = args.get("videoId"), args.get("before")
        try:
            found = self._pipelines.page(owner=caller.owner_filter, video_id=str(video_id) if video_id else None,
                                         limit=limit + 1, before=str(before) if before else None)
        except CursorError as e:
            raise RequestError(400, str(e)) from e
        items = [self._pipelines.view(p) for p in found[:limit]]
        return {"items": items, "next": cursor(found[limit - 1]) if len(found) > limit else None}

    def approve(self, args: dict[str, Any]) -> dict[str, Any]:
        """The owner or an administrator lets a pipeline waiting for review go on."""
        return self._pipelines.view(self._pipelines.approve(self._visible(args)))

    def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        """The owner or an administrator stops a pipeline that has not ended (409 when it has)."""
        return self._pipelines.view(self._pipelines.cancel(self._visible(args)))

    def _stage(self, caller: Caller, video: dict[str, Any], index: int, raw: dict[str, Any]) -> Stage:
        body = {k: v for k, v in raw.items() if k not in pipeline_spec.RESERVED}
        try:
            job_type, params, options = self._jobs.job_request(caller, video, raw["type"], body)
        except RequestError as e:
            raise RequestError(e.status, f"stage {index} ({str(raw['type'])[:32]}): {e}") from e
        return Stage(index, job_type, params, options, bool(raw.get("review", False)))

    def _visible(self, args: dict[str, Any]) -> Pipeline:
        caller = Caller(args)
        pipeline_id = args.get("pipelineId")
        pipeline = self._pipelines.find(pipeline_id) if isinstance(pipeline_id, str) and pipeline_id else None
        if pipeline is None or not caller.may_see(pipeline.owner):
            raise RequestError(404, f"pipeline {str(pipeline_id)[:64]} not found")
        return pipeline
