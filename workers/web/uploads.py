"""Uploads: streamed to a temp file, probed, given a thumbnail, then moved in place."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.requests import ClientDisconnect, Request

from cluster import media
from cluster.config import ClusterConfig
from cluster.logs import get_logger
from cluster.storage import LocalStorage
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


async def receive_body(request: Request, storage: LocalStorage, max_bytes: int, idle_s: float) -> Path:
    """Write the raw body to a temp file chunk by chunk; memory does not grow with the file. An upload that
    sends nothing for ``idle_s`` is a 408, and its temp file is removed."""
    declared = declared_length(request)
    if declared is not None and declared > max_bytes:
        raise ApiError(413, f"upload larger than {max_bytes} bytes")
    temp = storage.new_temp()
    size = 0
    try:
        # chunk writes land in the page cache in microseconds: not worth a thread hop each
        with open(temp, "wb") as out:  # noqa: ASYNC230
            async for chunk in idle_limited(request, idle_s):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"upload larger than {max_bytes} bytes")
                out.write(chunk)
        if size == 0:
            raise ApiError(400, "the upload is empty")
    except (ApiError, ClientDisconnect, OSError):
        temp.unlink(missing_ok=True)
        raise
    return temp


async def ingest(temp: Path, ext: str, storage: LocalStorage, ffmpeg: str,
                 limits: media.SourceLimits | None = None) -> tuple[str, dict[str, Any]]:
    """Probe the upload (refusing what passes ``limits``), make its thumbnail and move both in place;
    415 if it is not a video we take. The temp file is gone afterwards, whatever happens."""
    try:
        info, fmt = await _accepted(temp, ext, limits)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    video_id = secrets.token_hex(8)
    thumbnail_temp = storage.new_temp(".jpg")
    try:
        at_s = min(1.0, info.duration_s / 2)
        command = media.thumbnail_command(ffmpeg, str(temp), str(thumbnail_temp), at_s, src_format=fmt)
        await media.run_quick(command, THUMBNAIL_TIMEOUT_S)
        storage.commit(thumbnail_temp, storage.thumbnail(video_id))
        storage.commit(temp, storage.original(video_id, fmt))
    except (media.MediaError, OSError) as e:
        storage.remove_video(video_id)
        log.warning("upload refused: unreadable video", reason=str(e))
        raise ApiError(415, "cannot read the video: no frame could be decoded from it") from e
    finally:
        temp.unlink(missing_ok=True)
        with suppress(FileNotFoundError):
            thumbnail_temp.unlink()
    return video_id, {**info.to_dict(), "format": fmt}


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
