"""``preview``: a short animated WebP (no sound) from ``start`` for ``length`` seconds, ``preview.webp``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster import media
from cluster.jobspec import InvalidJob
from cluster.kinds.base import (
    MAX_TIME_S,
    Info,
    Job,
    Kind,
    even_integer,
    file_result,
    fixed_download,
    integer,
    per_video,
    scaled_height,
    seconds,
)

if TYPE_CHECKING:
    from cluster.storage import Layout

FILE = "preview.webp"
QUERY = "type=preview"
MAX_LENGTH_S = 10.0
MIN_LENGTH_S = 0.5
DEFAULT_LENGTH_S = 3.0
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 32, 640, 320
MIN_FPS, MAX_FPS, DEFAULT_FPS = 1, 30, 10
QUALITY = 60  # libwebp's 0-100: small files, still clear at these sizes


def _params(body: dict[str, Any], info: Info) -> dict[str, Any]:
    duration = float(info.get("duration") or 0.0)
    start = seconds(body, "start", 0.0, MAX_TIME_S, default=0.0)
    if start >= duration:
        raise InvalidJob(f"start must be before the end of the video ({duration:g} seconds)")
    length = seconds(body, "length", MIN_LENGTH_S, MAX_LENGTH_S, default=DEFAULT_LENGTH_S)
    width = even_integer(body, "width", MIN_WIDTH, MAX_WIDTH, default=DEFAULT_WIDTH)
    fps = integer(body, "fps", MIN_FPS, MAX_FPS, default=DEFAULT_FPS)
    return {"start": start, "length": round(min(length, duration - start), 3), "width": width, "fps": fps}


def _work(params: dict[str, Any], info: Info) -> float:
    width = int(params["width"])
    return width * scaled_height(width, info) * float(params["length"])


def preview_command(job: Job, dst: Path) -> list[str]:
    p = job.params
    width = int(p["width"])
    height = scaled_height(width, job.info.to_dict())
    return [
        job.ffmpeg, *media.BASE_ARGS, *media.PROGRESS_ARGS,
        "-ss", f"{float(p['start']):.3f}", "-t", f"{float(p['length']):.3f}", *media.input_args(job.source, job.source_fmt),
        "-map", "0:v:0", "-an", "-vf", f"fps={int(p['fps'])},scale={width}:{height},setsar=1",
        "-c:v", "libwebp_anim", "-loop", "0", "-quality", str(QUALITY), *media.threads_args(job.threads),
        "-f", "webp", os.fspath(dst),
    ]


def _finish(job: Job, path: Path) -> dict[str, Any]:
    width = int(job.params["width"])
    return file_result(job, QUERY, path, width=width, height=scaled_height(width, job.info.to_dict()),
                       start=job.params["start"], length=job.params["length"], fps=job.params["fps"],
                       size=path.stat().st_size)


def _file(layout: Layout, video_id: str) -> Path:
    return layout.video_dir(video_id) / FILE


KIND = Kind(
    name="preview",
    params=_params,
    work=_work,
    target=per_video(_file),
    command=preview_command,
    finish=_finish,
    summary_field="preview",
    progress_span=lambda params, _duration: float(params["length"]),
    downloads={"preview": fixed_download(_file)},
)
