"""``convert``: the video in another container format (and that format's codecs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster import jobspec, media
from cluster.kinds.base import Download, Job, Kind, video_result


def _work(_params: dict[str, Any], info: Any) -> float:
    return int(info["width"]) * int(info["height"]) * float(info.get("duration") or 0.0)


def _command(job: Job, dst: Path) -> list[str]:
    return media.convert_command(job.ffmpeg, job.source, dst, str(job.params["format"]), job.threads,
                                 src_format=job.source_fmt)


def _download(layout: Any, video_id: str, _info: Any, query: Any) -> Path:
    target = query.get("format")
    if target not in media.VIDEO_FORMATS:
        raise jobspec.InvalidJob("format must be one of " + ", ".join(media.VIDEO_FORMATS))
    return layout.converted(video_id, target)


KIND = Kind(
    name="convert",
    params=lambda body, info: jobspec.convert_params(body.get("format"), info["format"]),
    work=_work,
    target=lambda layout, video_id, params, _fmt: layout.converted(video_id, str(params["format"])),
    command=_command,
    finish=lambda job, path: video_result(job, f"type=converted&format={job.params['format']}", path),
    summary_field="conversions",
    summary_key=lambda params: str(params["format"]),
    downloads={"converted": Download(_download)},
)
