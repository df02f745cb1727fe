"""What each job type runs, and where its output goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster import media
from cluster.storage import LocalStorage
from workers.executor.ffmpeg_process import ProgressCallback, run_ffmpeg


class JobFailure(Exception):
    def __init__(self, error: str, permanent: bool, stderr_tail: str = "") -> None:
        super().__init__(error)
        self.permanent = permanent
        self.stderr_tail = stderr_tail


async def execute(payload: dict[str, Any], storage: LocalStorage, ffmpeg: str,
                  on_progress: ProgressCallback) -> dict[str, Any]:
    video = payload.get("video")
    if not video:
        raise JobFailure("source missing: the video is not in the store", permanent=True)
    video_id, job_type, params = payload["videoId"], payload["type"], payload["params"]
    info = media.MediaInfo.from_dict(video["info"])
    source = storage.original(video_id, video["info"]["format"])
    if not source.is_file():
        raise JobFailure(f"source missing: {source.name}", permanent=True)
    output = storage.job_output(job_type, video_id, params, video["info"]["format"])
    partial = storage.partial(output)
    argv = _command(ffmpeg, job_type, params, source, partial, video["info"]["format"], int(payload["threads"]))
    try:
        result = await run_ffmpeg(argv, info.duration_s, float(payload["timeoutS"]), on_progress)
        if not result.ok:
            raise JobFailure(result.describe(), permanent=False, stderr_tail=result.stderr_tail)
        storage.commit(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return _result(video_id, job_type, params, output)


def _command(ffmpeg: str, job_type: str, params: dict[str, Any], source: Path, partial: Path,
             source_fmt: str, threads: int) -> list[str]:
    if job_type == "resize":
        return media.resize_command(ffmpeg, str(source), str(partial), int(params["width"]),
                                    int(params["height"]), source_fmt, threads)
    if job_type == "convert":
        return media.convert_command(ffmpeg, str(source), str(partial), str(params["format"]), threads)
    raise JobFailure(f"invalid parameters: unknown job type {job_type!r}", permanent=True)


def _result(video_id: str, job_type: str, params: dict[str, Any], output: Path) -> dict[str, Any]:
    info = media.probe(output)
    if job_type == "resize":
        query = f"type=resize&dimensions={params['width']}x{params['height']}"
    else:
        query = f"type=converted&format={params['format']}"
    return {"file": output.name, "url": f"/get-video-asset?videoId={video_id}&{query}",
            "width": info.width, "height": info.height, "size": info.size_bytes,
            "duration": info.duration_s, "videoCodec": info.video_codec}
