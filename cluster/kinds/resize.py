"""``resize``: the video at width x height (fit contain, cover or stretch), in its own format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster import jobspec, media
from cluster.kinds.base import Download, Job, Kind, video_result


def _work(params: dict[str, Any], info: Any) -> float:
    return int(params["width"]) * int(params["height"]) * float(info.get("duration") or 0.0)


def _target(layout: Any, video_id: str, params: dict[str, Any], source_fmt: str) -> Path:
    return layout.resized(video_id, int(params["width"]), int(params["height"]), source_fmt)


def _command(job: Job, dst: Path) -> list[str]:
    fit = job.params.get("fit", media.DEFAULT_FIT)
    return media.resize_command(job.ffmpeg, job.source, dst, int(job.params["width"]), int(job.params["height"]),
                                job.source_fmt, job.threads, fit=str(fit))


def _query(params: dict[str, Any]) -> str:
    return f"type=resize&dimensions={params['width']}x{params['height']}"


def _finish(job: Job, path: Path) -> dict[str, Any]:
    return video_result(job, _query(job.params), path)


def _download(layout: Any, video_id: str, info: Any, query: Any) -> Path:
    width, _, height = (query.get("dimensions") or "").partition("x")
    w, h = _ascii_int(width), _ascii_int(height)
    if w is None or h is None:
        raise jobspec.InvalidJob("dimensions must look like 320x240")
    return layout.resized(video_id, w, h, info["format"])


def _ascii_int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


KIND = Kind(
    name="resize",
    params=lambda body, _info: jobspec.resize_params(body),
    work=_work,
    target=_target,
    command=_command,
    finish=_finish,
    summary_field="resizes",
    summary_key=lambda params: f"{params['width']}x{params['height']}",
    # two fits of one size write the same file (the later replaces it), each under its own partial name
    partial_tag=lambda params: str(params.get("fit", "")),
    downloads={"resize": Download(_download)},
)
