"""``thumbnail``: the video's ``thumbnail.jpg`` made again from a chosen time (the upload makes the first)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster import media
from cluster.kinds.base import (
    MAX_TIME_S,
    Info,
    Job,
    Kind,
    even_integer,
    file_result,
    fixed_download,
    image_size,
    last_frame_s,
    per_video,
    scaled_height,
    seconds,
)

if TYPE_CHECKING:
    from cluster.storage import Layout

DEFAULT_WIDTH = 320
MIN_WIDTH = 16
MAX_WIDTH = 1920
DEFAULT_AT = 0.1  # of the duration
QUERY = "type=thumbnail"


def _params(body: dict[str, Any], info: Info) -> dict[str, Any]:
    """``at`` seconds (10 % in by default; a time past the last frame is clipped to it) and ``width``."""
    last = last_frame_s(info)
    at = seconds(body, "at", 0.0, MAX_TIME_S, default=round(float(info.get("duration") or 0.0) * DEFAULT_AT, 3))
    width = even_integer(body, "width", MIN_WIDTH, MAX_WIDTH, default=DEFAULT_WIDTH)
    return {"at": min(at, last), "width": width}


def _command(job: Job, dst: Path) -> list[str]:
    return media.thumbnail_command(job.ffmpeg, job.source, dst, float(job.params["at"]), job.source_fmt,
                                   width=int(job.params["width"]))


def _finish(job: Job, path: Path) -> dict[str, Any]:
    width, height = image_size(path)
    return file_result(job, QUERY, path, width=width, height=height, at=job.params["at"], size=path.stat().st_size)


def _file(layout: Layout, video_id: str) -> Path:
    return layout.thumbnail(video_id)


KIND = Kind(
    name="thumbnail",
    params=_params,
    work=lambda params, info: float(int(params["width"]) * scaled_height(int(params["width"]), info)),
    target=per_video(_file),
    command=_command,
    finish=_finish,
    summary_field="thumbnailJob",  # "thumbnail" is the image's URL
    downloads={"thumbnail": fixed_download(_file)},
)
