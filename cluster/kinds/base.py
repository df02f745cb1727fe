"""What a kind of job is: the one description the routes, the primary, the executors and the pages use.

A `Kind` says how a request's body becomes its parameters (or a 400), what it costs, which file or
directory it makes (fenced as a whole under a run-scoped name), the ffmpeg command that makes it, the
result it reports, the ``/get-video-asset?type=`` downloads it answers and the field of a video's
summary (``GET /api/videos``) its newest job shows in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from cluster import media
from cluster.jobspec import InvalidJob
from cluster.storage import content_type

if TYPE_CHECKING:
    from cluster.storage import Layout
    from workers.executor.ffmpeg_process import ProgressCallback

Info = Mapping[str, Any]  # a video's stored info: MediaInfo.to_dict() and its "format"
Query = Mapping[str, str]  # a download's query string
MAX_TIME_S = 30 * 24 * 3600.0  # a bound on times in a video (the source limits are far shorter)


@dataclass(frozen=True)
class Job:
    """One job as an executor runs it."""
    video_id: str
    params: dict[str, Any]
    source: Path
    source_fmt: str
    info: media.MediaInfo  # probed when the job starts, not the copy stored at upload
    output: Path  # the kind's target: its file, or its directory
    ffmpeg: str
    threads: int
    timeout_s: float
    on_progress: ProgressCallback
    run_id: str = ""  # set when the primary dispatched it: outputs stay under run-scoped names for it to accept


@dataclass(frozen=True)
class Download:
    """One ``/get-video-asset?type=<name>`` download: the path it serves, from the query (InvalidJob: 400)."""
    path: Callable[[Layout, str, Info, Query], PurePath]
    through_worker: bool = False  # a small text file that names others: served whole, never redirected to S3


@dataclass(frozen=True)
class Kind:
    name: str
    params: Callable[[dict[str, Any], Info], dict[str, Any]]  # (request body, video info) -> params
    work: Callable[[dict[str, Any], Info], float]  # output pixels x seconds, roughly (--max-job-work)
    target: Callable[[Layout, str, dict[str, Any], str], Path]  # (layout, videoId, params, source format)
    command: Callable[[Job, Path], list[str]]  # ffmpeg writing the target at the given (partial) path
    # The result, from the finished output at the given path: a file kind's (in a thread, the file complete),
    # a directory kind's partial directory (synchronously, where it may write its index file first).
    finish: Callable[[Job, Path], dict[str, Any]]
    summary_field: str  # its field in a video's summary
    summary_key: Callable[[dict[str, Any]], str] | None = None  # several outputs per video: the key of each
    # the target is a directory, moved in place whole, and this its file naming the others: written and
    # published last (None: the target is one file)
    last: str | None = None
    partial_tag: Callable[[dict[str, Any]], str] = lambda _params: ""  # tells apart unfenced runs at once
    downloads: Mapping[str, Download] = field(default_factory=dict)
    # the seconds of media ffmpeg's progress counts up to, when not the whole source's
    progress_span: Callable[[dict[str, Any], float], float] | None = None

    @property
    def directory(self) -> bool:
        return self.last is not None


def per_video(where: Callable[[Layout, str], Path]) -> Callable[[Layout, str, dict[str, Any], str], Path]:
    """The `Kind.target` of a kind making one output per video, whatever its params."""
    return lambda layout, video_id, _params, _fmt: where(layout, video_id)


def fixed_download(where: Callable[[Layout, str], PurePath], through_worker: bool = False) -> Download:
    """The download of a video's one file, whatever the query."""
    return Download(lambda layout, video_id, _info, _query: where(layout, video_id), through_worker)


def asset_url(video_id: str, query: str) -> str:
    return f"/get-video-asset?videoId={video_id}&{query}"


def output_entry(name: str, url: str, path: Path) -> dict[str, Any]:
    """One file of a result's ``outputs``, measured at `path` (its partial or final name)."""
    return {"name": name, "url": url, "contentType": content_type(PurePath(name)), "size": os.path.getsize(path)}


def file_result(job: Job, query: str, path: Path, **facts: Any) -> dict[str, Any]:
    """What a kind making one file reports: its name, its download URL (``type=...`` query), `facts`, and the
    file as its one output, measured at `path`."""
    url = asset_url(job.video_id, query)
    return {"file": job.output.name, "url": url, **facts, "outputs": [output_entry(job.output.name, url, path)]}


def video_result(job: Job, query: str, path: Path) -> dict[str, Any]:
    """What a kind making one video file (resize, convert) reports: the file, its URL, its size and what a probe says."""
    info = media.probe(path)
    return file_result(job, query, path, width=info.width, height=info.height, size=info.size_bytes,
                       duration=info.duration_s, videoCodec=info.video_codec)


# --- parameter checks shared by the kinds ----------------------------------------------------------

def integer(body: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if value is None:
        raise InvalidJob(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidJob(f"{name} must be between {low} and {high}")
    return value


def even_integer(body: Mapping[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = integer(body, name, low, high, default)
    if value % 2:
        raise InvalidJob(f"{name} must be even")
    return value


def seconds(body: Mapping[str, Any], name: str, low: float, high: float, default: float | None = None) -> float:
    value = body.get(name, default)
    if value is None:
        raise InvalidJob(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidJob(f"{name} must be a number of seconds")
    if not low <= value <= high:
        raise InvalidJob(f"{name} must be between {low:g} and {high:g} seconds")
    return round(float(value), 3)


def last_frame_s(info: Info) -> float:
    """The latest time a frame can be read from (a seek to the very end finds none)."""
    duration = float(info.get("duration") or 0.0)
    frame_s = 1.0 / float(info["frameRate"]) if info.get("frameRate") else 0.1
    return max(0.0, round(duration - frame_s, 3))


def scaled_height(width: int, info: Info) -> int:
    """The even height keeping the source's aspect ratio at `width` (as ``scale=W:-2`` would)."""
    return max(2, round(width * int(info["height"]) / int(info["width"]) / 2) * 2)


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image we wrote (a JPEG), as a probe of our own output reads them."""
    info = media.probe(path)
    return info.width, info.height
