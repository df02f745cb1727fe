"""What each job type runs, and where its output goes."""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cluster import hls, jobspec, media
from cluster.storage import Layout, LocalStorage, StorageError, discard
from workers.executor.ffmpeg_process import FfmpegResult, ProgressCallback, run_ffmpeg

# ffmpeg says why an output cannot be made only in its log. Matching that text is acceptable here
# because it merely chooses between "retry" and "give up": no media fact is read from it (PyAV does
# that), and a message matching none of these errs on the side of a retry.
IMPOSSIBLE_OUTPUT_MARKERS = (
    "Error while opening encoder",  # the encoder refuses the size, sample rate, bit rate...
    "(incorrect codec parameters ?): Invalid argument",  # the muxer refuses a stream when writing its header
    "not supported",
    "not currently supported in container",
    "supports only codec",
)
NO_AUDIO = "invalid parameters: the video has no audio"

if TYPE_CHECKING:
    from cluster.storage import Storage

T = TypeVar("T")


class JobFailure(Exception):
    def __init__(self, error: str, permanent: bool, stderr_tail: str = "", command: str | None = None) -> None:
        super().__init__(error)
        self.permanent = permanent
        self.stderr_tail = stderr_tail
        self.command = command  # the ffmpeg command line, when ffmpeg ran


@dataclass(frozen=True)
class Job:
    video_id: str
    params: dict[str, Any]
    source: Path
    source_fmt: str
    info: media.MediaInfo  # probed when the job starts, not the copy stored at upload
    output: Path
    ffmpeg: str
    threads: int
    timeout_s: float
    on_progress: ProgressCallback
    run_id: str = ""  # set when the primary dispatched it: outputs stay under run-scoped names for it to accept


Runner = Callable[[Job], Awaitable[dict[str, Any]]]


async def execute(payload: dict[str, Any], storage: Storage, ffmpeg: str,
                  on_progress: ProgressCallback, run_id: str = "") -> dict[str, Any]:
    """Run one job in the storage's workspace (the storage itself on local disk; with S3, local copies
    in the scratch dir), then have the storage make its outputs visible."""
    runner = RUNNERS.get(payload["type"])
    if runner is None:
        raise JobFailure(f"invalid parameters: unknown job type {payload['type']!r}", permanent=True)
    video = payload.get("video")
    if not video:
        raise JobFailure("source missing: the video is not in the store", permanent=True)
    video_id = _checked(Layout.check_video_id, payload["videoId"])
    try:
        async with storage.workspace(video_id, run_id, video["info"]["format"]) as work:
            try:
                # fenced by run-scoped names here only on the storage itself; an S3 run is fenced by its keys
                job = await _prepare(payload, work, ffmpeg, on_progress, run_id if work is storage else "")
                result = await runner(job)
            except (JobFailure, OSError, media.MediaError) as e:
                if work is storage:
                    raise
                raise _scratch_free(e, work, video_id) from e
            await storage.save_outputs(work, video_id, run_id, job.output)
    except StorageError as e:
        raise JobFailure(f"storage unavailable: {e}", permanent=False) from e
    return result


async def _prepare(payload: dict[str, Any], storage: LocalStorage, ffmpeg: str,
                   on_progress: ProgressCallback, run_id: str) -> Job:
    video_id, source_fmt, params = payload["videoId"], payload["video"]["info"]["format"], payload["params"]
    source = storage.original(video_id, source_fmt)
    if not source.is_file():
        raise JobFailure(f"source missing: {source.name}", permanent=True)
    try:
        info = await asyncio.to_thread(media.probe_source, source)
    except media.ProbeError as e:
        raise JobFailure(f"unreadable input: {e}", permanent=True) from e
    output = _checked(storage.job_output, payload["type"], video_id, params, source_fmt)
    return Job(video_id, params, source, source_fmt, info, output, ffmpeg, int(payload["threads"]),
               float(payload["timeoutS"]), on_progress, run_id)


def _scratch_free(error: Exception, work: LocalStorage, video_id: str) -> JobFailure:
    """A failure in a scratch workspace, its message without the workspace's paths."""
    message = public_error(str(error), work, video_id)
    if isinstance(error, JobFailure):
        return JobFailure(message, error.permanent, error.stderr_tail, error.command)
    return JobFailure(message, permanent=False)


def public_error(message: str, storage: Storage, video_id: Any) -> str:
    """The message with the data dir taken out: a video's files by their names (``original.mp4``)."""
    if storage.is_remote:  # its paths are keys; its local files are in the scratch dir
        return message.replace(str(storage.root), "<scratch>")
    roots = {str(storage.root), str(storage.root.resolve())}
    if isinstance(video_id, str) and video_id.isalnum():
        video_dirs = {str(storage.video_dir(video_id)), str(storage.video_dir(video_id).resolve())}
        for video_dir in sorted(video_dirs, key=len, reverse=True):
            message = message.replace(video_dir + os.sep, "")
    for root in sorted(roots, key=len, reverse=True):
        message = message.replace(root, "<storage>")
    return message


def _checked(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a builder of paths or commands; what it refuses is a permanent parameter error."""
    try:
        return build(*args, **kwargs)
    except (KeyError, ValueError, TypeError, media.MediaError) as e:  # jobspec.InvalidJob is a ValueError
        raise JobFailure(f"invalid parameters: {e}", permanent=True) from e


async def _run(argv: list[str], job: Job) -> None:
    result = await run_ffmpeg(argv, job.info.duration_s, job.timeout_s, job.on_progress)
    if not result.ok:
        raise _failure(result, shlex.join(argv))


def _failure(result: FfmpegResult, command: str) -> JobFailure:
    marker = _impossible_output(result)
    if marker is not None:  # the marker is our text: the stderr itself (paths, details) is for administrators
        return JobFailure(f"impossible output: {result.describe()} ({marker})", permanent=True,
                          stderr_tail=result.stderr_tail, command=command)
    return JobFailure(result.describe(), permanent=False, stderr_tail=result.stderr_tail, command=command)


def _impossible_output(result: FfmpegResult) -> str | None:
    """The marker of an output ffmpeg cannot make, found in its log; None for a failure worth a retry."""
    # A crash (signal) or a timeout may go away on a retry, whatever the log says.
    if result.returncode <= 0 or result.timed_out:
        return None
    return next((marker for marker in IMPOSSIBLE_OUTPUT_MARKERS if marker in result.stderr_tail), None)


# --- jobs writing one file -------------------------------------------------------

@dataclass(frozen=True)
class FileJob:
    """A job whose output is one file, written under a partial name and moved in place when complete."""
    command: Callable[[Job, Path], list[str]]
    describe: Callable[[Job, Path], dict[str, Any]]  # the result, from the finished output; runs in a thread


async def _run_file_job(spec: FileJob, job: Job) -> dict[str, Any]:
    if job.run_id:
        return await _run_fenced_file_job(spec, job)
    # Two fits of one size write the same file (the later replaces it), each under its own partial name.
    partial = LocalStorage.partial(job.output, tag=str(job.params.get("fit", "")))
    argv = _checked(spec.command, job, partial)
    try:
        await _run(argv, job)
        LocalStorage.commit(partial, job.output)
    finally:
        partial.unlink(missing_ok=True)
    return await asyncio.to_thread(spec.describe, job, job.output)


async def _run_fenced_file_job(spec: FileJob, job: Job) -> dict[str, Any]:
    """The output stays under its run-scoped name: the primary moves it in place if it accepts the run."""
    partial = LocalStorage.run_partial(job.output, job.run_id)
    argv = _checked(spec.command, job, partial)
    try:
        await _run(argv, job)
        return await asyncio.to_thread(spec.describe, job, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _asset_url(video_id: str, query: str) -> str:
    return f"/get-video-asset?videoId={video_id}&{query}"


def _resize_command(job: Job, dst: Path) -> list[str]:
    fit = job.params.get("fit", media.DEFAULT_FIT)
    return media.resize_command(job.ffmpeg, job.source, dst, int(job.params["width"]), int(job.params["height"]),
                                job.source_fmt, job.threads, fit=str(fit))


def _convert_command(job: Job, dst: Path) -> list[str]:
    return media.convert_command(job.ffmpeg, job.source, dst, str(job.params["format"]), job.threads,
                                 src_format=job.source_fmt)


def _extract_audio_command(job: Job, dst: Path) -> list[str]:
    if job.info.audio_codec is None:
        raise JobFailure(NO_AUDIO, permanent=True)
    copy = job.info.audio_codec == "aac"
    return media.extract_audio_command(job.ffmpeg, job.source, dst, copy=copy, threads=job.threads,
                                       src_format=job.source_fmt)


def _video_result(job: Job, query: str, path: Path) -> dict[str, Any]:
    info = media.probe(path)
    return {"file": job.output.name, "url": _asset_url(job.video_id, query),
            "width": info.width, "height": info.height, "size": info.size_bytes,
            "duration": info.duration_s, "videoCodec": info.video_codec}


def _resize_result(job: Job, path: Path) -> dict[str, Any]:
    return _video_result(job, f"type=resize&dimensions={job.params['width']}x{job.params['height']}", path)


def _convert_result(job: Job, path: Path) -> dict[str, Any]:
    return _video_result(job, f"type=converted&format={job.params['format']}", path)


def _audio_result(job: Job, path: Path) -> dict[str, Any]:
    info = media.probe_audio(path)
    return {"file": job.output.name, "url": _asset_url(job.video_id, "type=audio"), "size": info.size_bytes,
            "audioCodec": info.codec, "duration": info.duration_s}


# --- HLS ladder --------------------------------------------------------------------

def _ladder(job: Job) -> list[hls.Rendition]:
    """The ladder the route checked, by the same rule, on the source as probed now."""
    heights = job.params.get("renditions", list(jobspec.HLS_HEIGHTS))
    return _checked(jobspec.hls_ladder, heights, job.info.to_dict())


async def _run_hls(job: Job) -> dict[str, Any]:
    """Write the whole ladder into a hidden directory, master playlist last, then move it in place.

    Only ffmpeg is awaited: the steps around it touch the partial directory synchronously (they
    are short), so a cancellation can never race a thread still writing or moving it.
    """
    renditions = _ladder(job)
    has_audio = job.info.audio_codec is not None
    final_dir = job.output.parent
    # one partial dir per ladder: two ladders of one video with other renditions may run at once
    ladder_name = "-".join(str(r.height) for r in renditions)
    fenced = bool(job.run_id)  # the ladder stays under its run-scoped name: the primary moves it in place
    partial = (LocalStorage.run_partial(final_dir, job.run_id) if fenced
               else final_dir.with_name(f".{final_dir.name}-{ladder_name}.part"))
    argv = _checked(hls.hls_command, job.ffmpeg, job.source, partial, renditions, has_audio, job.threads,
                    job.source_fmt)
    made = False
    try:
        discard(partial)  # what an attempt that died left
        partial.mkdir(parents=True)
        await _run(argv, job)
        variants = hls.write_hls_master(partial / job.output.name, renditions, has_audio)
        replaced = None if fenced else LocalStorage.commit_dir(partial, final_dir)
        made = True
    finally:
        # Also on cancellation: run_ffmpeg has killed and reaped ffmpeg by now, nothing writes here any more.
        if not (made and fenced):
            discard(partial)
    if replaced is not None:
        await asyncio.to_thread(discard, replaced)
    return {"master": f"{final_dir.name}/{job.output.name}", "url": f"/hls/{job.video_id}/{job.output.name}",
            "renditions": [{"height": v.height, "width": v.width, "bandwidth": v.bandwidth} for v in variants]}


def _file_job(command: Callable[[Job, Path], list[str]], describe: Callable[[Job, Path], dict[str, Any]]) -> Runner:
    return functools.partial(_run_file_job, FileJob(command, describe))


RUNNERS: dict[str, Runner] = {
    "resize": _file_job(_resize_command, _resize_result),
    "convert": _file_job(_convert_command, _convert_result),
    "extract-audio": _file_job(_extract_audio_command, _audio_result),
    "hls": _run_hls,
}
