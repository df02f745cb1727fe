"""``extract-audio``: the first audio stream as AAC (copied when it already is)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster import jobspec, media
from cluster.kinds.base import Job, Kind, file_result, fixed_download, per_video

if TYPE_CHECKING:
    from cluster.storage import Layout

NO_AUDIO = "invalid parameters: the video has no audio"
QUERY = "type=audio"


class NoAudio(ValueError):
    """The source probed at the job's start has no audio (a permanent failure)."""


def _command(job: Job, dst: Path) -> list[str]:
    if job.info.audio_codec is None:
        raise NoAudio("the video has no audio")
    return media.extract_audio_command(job.ffmpeg, job.source, dst, copy=job.info.audio_codec == "aac",
                                       threads=job.threads, src_format=job.source_fmt)


def _finish(job: Job, path: Path) -> dict[str, Any]:
    info = media.probe_audio(path)
    return file_result(job, QUERY, path, size=info.size_bytes, audioCodec=info.codec, duration=info.duration_s)


def _file(layout: Layout, video_id: str) -> Path:
    return layout.audio(video_id)


KIND = Kind(
    name="extract-audio",
    params=lambda _body, info: jobspec.audio_params(dict(info)),
    work=lambda _params, _info: 0.0,  # audio only: bounded by the source's duration limit
    target=per_video(_file),
    command=_command,
    finish=_finish,
    summary_field="audio",
    downloads={"audio": fixed_download(_file)},
)
