"""Uploads: streamed to a temp file, probed, given a thumbnail, then moved in place."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.requests import ClientDisconnect, Request

from cluster import media
from cluster.logs import get_logger
from cluster.storage import LocalStorage
from workers.web.errors import ApiError
from workers.web.request_body import declared_length, idle_limited

THUMBNAIL_TIMEOUT_S = 30.0
MAX_FILENAME_CHARS = 255

log = get_logger()


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


async def ingest(temp: Path, ext: str, storage: LocalStorage, ffmpeg: str) -> tuple[str, dict[str, Any]]:
    """Probe the upload, make its thumbnail and move both in place; 415 if it is not a video."""
    try:
        info = await asyncio.to_thread(media.probe, temp)
    except media.ProbeError as e:
        temp.unlink(missing_ok=True)
        log.info("upload refused: not a video", reason=str(e))
        raise ApiError(415, "not a video: the file could not be read as a video (no video stream found)") from e
    fmt = _format(info, ext)
    video_id = secrets.token_hex(8)
    thumbnail_temp = storage.new_temp(".jpg")
    try:
        at_s = min(1.0, info.duration_s / 2)
        await media.run_quick(media.thumbnail_command(ffmpeg, str(temp), str(thumbnail_temp), at_s), THUMBNAIL_TIMEOUT_S)
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


def _format(info: media.MediaInfo, ext: str) -> str:
    """The container as probed; the extension only tells mp4 from mov, which probe cannot."""
    probed = media.format_of(info)
    if probed is None:
        raise ApiError(415, f"unsupported container {info.container}")
    if probed == "mp4" and ext in ("mp4", "mov"):
        return ext
    return probed
