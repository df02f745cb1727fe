"""The registry of job kinds: one module per kind (see `cluster.kinds.base.Kind`), listed here once.

Adding a kind: write its module (name, params, work, target, command, finish, summary field,
downloads) and add it to `KINDS`; the routes, the executors, the primary and the pages take it from here.
"""

from __future__ import annotations

from typing import Any

from cluster import jobspec
from cluster.kinds import convert, extract_audio, hls, preview, resize, storyboard, thumbnail
from cluster.kinds.base import Download, Info, Kind

KINDS: dict[str, Kind] = {k.name: k for k in (
    resize.KIND, convert.KIND, extract_audio.KIND, hls.KIND, thumbnail.KIND, storyboard.KIND, preview.KIND,
)}
DOWNLOADS: dict[str, Download] = {name: d for k in KINDS.values() for name, d in k.downloads.items()}


class UnknownKind(jobspec.InvalidJob):
    pass


def kind(name: Any) -> Kind:
    found = KINDS.get(name) if isinstance(name, str) else None
    if found is None:
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "..."  # never echo a whole body
        raise UnknownKind(f"unknown job type {shown!r}: one of {', '.join(KINDS)}")
    return found


def job_request(job_type: Any, body: dict[str, Any], info: Info) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A request's kind, its parameters and the options every kind takes (InvalidJob: a 400)."""
    found = kind(job_type)
    return found.name, found.params(body, info), jobspec.job_options(body)


def summary_fields() -> dict[str, Any]:
    """Every kind's field of a video's summary, empty: ``{}`` for kinds keyed by params, else None."""
    return {k.summary_field: {} if k.summary_key else None for k in KINDS.values()}


def summarize(jobs: list[Any]) -> dict[str, Any]:
    """A video's outputs from its jobs, newest first: the newest job of each output, in its kind's field."""
    fields = summary_fields()
    for job in jobs:
        found = KINDS.get(job.type)
        if found is None:
            continue  # a kind this version no longer runs
        summary = {"jobId": job.id, "state": job.state.value, "progress": job.progress,
                   "processing": not job.state.is_final, "result": job.result}
        if found.summary_key is None:
            fields[found.summary_field] = fields[found.summary_field] or summary
        else:
            fields[found.summary_field].setdefault(found.summary_key(job.params), summary)
    return fields


__all__ = ["DOWNLOADS", "KINDS", "Kind", "UnknownKind", "job_request", "kind", "summarize", "summary_fields"]
