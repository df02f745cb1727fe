"""Uploads: streamed to the storage's sink (a temp file, and with S3 a multipart upload), probed,
given a thumbnail, then moved in place."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from cluster import media
from cluster.config import ClusterConfig
from cluster.logs import get_logger
from cluster.storage import StorageError

if TYPE_CHECKING:
    from cluster.storage import Storage, UploadSink
from workers.web.errors import ApiError
from workers.web.request_body import declared_length, idle_limited

THUMBNAIL_TIMEOUT_S = 30.0
MAX_FILENAME_CHARS = 255

log = get_logger()


def source_limits(config: ClusterConfig) -> media.SourceLimits:
    return media.SourceLimits(config.max_source_pixels, config.max_source_fps, config.max_source_duration_s)


def upload_extension(filename: str | None) -> str:
    if not filename:
        raise ApiError(400, "the filename header is required")
    if len(filename) > MAX_FILENAME_CHARS:
        raise ApiError(400, f"filename must be at most {MAX_FILENAME_CHARS} characters")
    ext = PurePosixPath(filename).suffix.lower().lstrip(".")
    if ext not in media.VIDEO_FORMATS:
        raise ApiError(400, f"filename must end in one of .{', .'.join(media.VIDEO_FORMATS)}")
    return ext


async def receive_body(request: Request, storage: Storage, max_bytes: int, idle_s: float,
                       ext: str = "mp4") -> UploadSink:
    """Write the raw body chunk by chunk to the storage's sink (a temp file; with S3 also a multipart
    upload); memory does not grow with the file. Refused or broken off (or silent for ``idle_s``: 408),
    the upload leaves nothing."""
    declared = declared_length(request)
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"upload larger than {max_bytes / 2**20:g} MiB")
    sink = storage.upload_sink(ext)
    size = 0
    try:
        async for chunk in idle_limited(request, idle_s):
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"upload larger than {max_bytes / 2**20:g} MiB")
            await sink.write(chunk)
        if size == 0:
            raise ApiError(400, "the upload is empty")
        await sink.finish()
    except StorageError as e:
        await _abort(sink)
        log.warning("upload failed: storage unavailable", error=str(e))
        raise ApiError(503, "the storage is unavailable: try again later") from e
    except BaseException:  # refused, the client gone, or the request cancelled
        await _abort(sink)
        raise
    return sink


async def ingest(sink: UploadSink, ext: str, storage: Storage, ffmpeg: str,
                 limits: media.SourceLimits | None = None) -> tuple[str, dict[str, Any]]:
    """Probe the upload (refusing what passes ``limits``), make its thumbnail and move both in place;
    415 if it is not a video we take. The temp file is gone afterwards, whatever happens."""
    temp = sink.path
    try:
        info, fmt = await _accepted(temp, ext, limits)
    except BaseException:
        await _abort(sink)
        raise
    video_id = sink.video_id
    thumbnail_temp = storage.new_temp(".jpg")
    try:
        at_s = min(1.0, info.duration_s / 2)
        command = media.thumbnail_command(ffmpeg, str(temp), str(thumbnail_temp), at_s, src_format=fmt)
        await media.run_quick(command, THUMBNAIL_TIMEOUT_S)
        await sink.commit(fmt, thumbnail_temp)
    except StorageError as e:
        await _abort(sink, storage)
        log.warning("upload failed: storage unavailable", error=str(e))
        raise ApiError(503, "the storage is unavailable: try again later") from e
    except (media.MediaError, OSError) as e:
        await _abort(sink, storage)
        log.warning("upload refused: unreadable video", reason=str(e))
        raise ApiError(415, "cannot read the video: no frame could be decoded from it") from e
    except BaseException:
        await _abort(sink, storage)
        raise
    finally:
        temp.unlink(missing_ok=True)
        with suppress(FileNotFoundError):
            thumbnail_temp.unlink()
    return video_id, {**info.to_dict(), "format": fmt}


async def _abort(sink: UploadSink, storage: Storage | None = None) -> None:
    """Leave nothing of the upload; shielded, so a cancelled request still cleans up."""
    async def abort() -> None:
        await sink.abort()
        if storage is not None:  # the thumbnail may be in place already
            await asyncio.to_thread(storage.remove_video, sink.video_id)

    await asyncio.shield(abort())


async def _accepted(temp: Path, ext: str, limits: media.SourceLimits | None) -> tuple[media.MediaInfo, str]:
    """The probed facts and format of an upload we take; 415 naming the reason otherwise. No ffmpeg runs."""
    try:
        info = await asyncio.to_thread(media.probe_source, temp, limits)
    except media.SourceRefused as e:
        log.info("upload refused", reason=str(e))
        raise ApiError(415, f"video refused: {_without_temp_name(str(e), temp)}") from e
    except media.ProbeError as e:
        log.info("upload refused: not a video", reason=str(e))
        raise ApiError(415, "not a video: the file could not be read as a video (no video stream found)") from e
    return info, _format(info, ext)


def _without_temp_name(message: str, temp: Path) -> str:
    return message.replace(repr(temp.name), "the upload").replace(temp.name, "the upload")


def _format(info: media.MediaInfo, ext: str) -> str:
    """The container as probed; the extension only tells mp4 from mov, which probe cannot."""
    probed = media.format_of(info)
    if probed is None:
        raise ApiError(415, f"unsupported container {info.container}")
    if probed == "mp4" and ext in ("mp4", "mov"):
        return ext
    return probed
