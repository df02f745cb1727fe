"""How an executor runs a job of any kind (`cluster.kinds`): in which workspace, under which partial
names, and how its output is moved in place (or left under its run-scoped name for the primary)."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cluster import kinds, media
from cluster.kinds.base import Job, Kind
from cluster.kinds.extract_audio import NO_AUDIO
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
__all__ = ["NO_AUDIO", "Job", "JobFailure", "execute", "public_error"]

if TYPE_CHECKING:
    from cluster.storage import Storage

T = TypeVar("T")


class JobFailure(Exception):
    def __init__(self, error: str, permanent: bool, stderr_tail: str = "", command: str | None = None) -> None:
        super().__init__(error)
        self.permanent = permanent
        self.stderr_tail = stderr_tail
        self.command = command  # the ffmpeg command line, when ffmpeg ran


async def execute(payload: dict[str, Any], storage: Storage, ffmpeg: str,
                  on_progress: ProgressCallback, run_id: str = "") -> dict[str, Any]:
    """Run one job in the storage's workspace (the storage itself on local disk; with S3, local copies
    in the scratch dir), then have the storage keep its outputs under the run's names (S3: upload them
    under the run's keys). Only the primary makes a dispatched run's outputs visible, when it accepts it."""
    kind = _checked(kinds.kind, payload["type"])
    video = payload.get("video")
    if not video:
        raise JobFailure("source missing: the video is not in the store", permanent=True)
    video_id = _checked(Layout.check_video_id, payload["videoId"])
    try:
        async with storage.workspace(video_id, run_id, video["info"]["format"]) as work:
            try:
                # fenced by run-scoped names here only on the storage itself; an S3 run is fenced by its keys
                job = await _prepare(kind, payload, work, ffmpeg, on_progress, run_id if work is storage else "")
                result = await (_run_dir_job if kind.directory else _run_file_job)(kind, job)
            except (JobFailure, OSError, media.MediaError) as e:
                if work is storage:
                    raise
                raise _scratch_free(e, work, video_id) from e
            await storage.save_outputs(work, video_id, run_id, job.output, kind.last)
    except StorageError as e:
        raise JobFailure(f"storage unavailable: {e}", permanent=False) from e
    return result


async def _prepare(kind: Kind, payload: dict[str, Any], storage: LocalStorage, ffmpeg: str,
                   on_progress: ProgressCallback, run_id: str) -> Job:
    video_id, source_fmt, params = payload["videoId"], payload["video"]["info"]["format"], payload["params"]
    source = storage.original(video_id, source_fmt)
    if not source.is_file():
        raise JobFailure(f"source missing: {source.name}", permanent=True)
    try:
        info = await asyncio.to_thread(media.probe_source, source)
    except media.ProbeError as e:
        raise JobFailure(f"unreadable input: {e}", permanent=True) from e
    output = _checked(kind.target, storage, video_id, params, source_fmt)
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


async def _run(kind: Kind, argv: list[str], job: Job) -> None:
    span_s = kind.progress_span(job.params, job.info.duration_s) if kind.progress_span else job.info.duration_s
    result = await run_ffmpeg(argv, span_s, job.timeout_s, job.on_progress)
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


def _partial(kind: Kind, job: Job) -> Path:
    """Where the output (a file or a directory) is written: under the run's name when dispatched (the primary
    moves it in place), else under a partial name told apart by the kind's tag (the job moves it)."""
    if job.run_id:
        return LocalStorage.run_partial(job.output, job.run_id)
    return LocalStorage.partial(job.output, tag=_checked(kind.partial_tag, job.params))


# --- kinds writing one file -------------------------------------------------------

async def _run_file_job(kind: Kind, job: Job) -> dict[str, Any]:
    """Written under a partial name and moved in place when complete."""
    if job.run_id:
        return await _run_fenced_file_job(kind, job)
    partial = _partial(kind, job)
    argv = _checked(kind.command, job, partial)
    try:
        await _run(kind, argv, job)
        LocalStorage.commit(partial, job.output)
    finally:
        partial.unlink(missing_ok=True)
    return await asyncio.to_thread(kind.finish, job, job.output)


async def _run_fenced_file_job(kind: Kind, job: Job) -> dict[str, Any]:
    """The output stays under its run-scoped name: the primary moves it in place if it accepts the run."""
    partial = _partial(kind, job)
    argv = _checked(kind.command, job, partial)
    try:
        await _run(kind, argv, job)
        return await asyncio.to_thread(kind.finish, job, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# --- kinds writing a directory (an HLS ladder, a storyboard) -------------------------------

async def _run_dir_job(kind: Kind, job: Job) -> dict[str, Any]:
    """Write the whole directory under a partial name (the kind's index file last, in `finish`), then move
    it in place.

    Only ffmpeg is awaited: the steps around it touch the partial directory synchronously (they
    are short), so a cancellation can never race a thread still writing or moving it.
    """
    final_dir = job.output
    fenced = bool(job.run_id)  # the directory stays under its run-scoped name: the primary moves it in place
    partial = _partial(kind, job)
    argv = _checked(kind.command, job, partial)
    made = False
    try:
        discard(partial)  # what an attempt that died left
        partial.mkdir(parents=True)
        await _run(kind, argv, job)
        result = kind.finish(job, partial)
        replaced = None if fenced else LocalStorage.commit_dir(partial, final_dir)
        made = True
    finally:
        # Also on cancellation: run_ffmpeg has killed and reaped ffmpeg by now, nothing writes here any more.
        if not (made and fenced):
            discard(partial)
    if replaced is not None:
        await asyncio.to_thread(discard, replaced)
    return result
