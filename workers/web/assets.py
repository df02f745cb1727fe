"""Serving a video's files: local ones as files, S3 objects by a redirect to a presigned URL.

HLS playlists are the exception: they are served whole through the web worker, so that their relative
URLs resolve against ``/hls/<videoId>/...`` (a redirected playlist would resolve them against S3);
only the segments redirect.
"""

from __future__ import annotations

from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

from starlette.responses import FileResponse, RedirectResponse, Response

from cluster.storage import StorageError, content_type
from workers.web.errors import ApiError

if TYPE_CHECKING:
    from cluster.storage import Storage

NO_ASSET = "that asset does not exist (yet)"
NO_HLS_FILE = "no such HLS file (is the ladder made yet?)"
STORAGE_DOWN = "the storage is unavailable: try again later"


async def asset_response(storage: Storage, path: PurePath, download_name: str) -> Response:
    if not storage.is_remote:
        if not Path(path).is_file():
            raise ApiError(404, NO_ASSET)
        return FileResponse(path, media_type=content_type(path), filename=download_name)
    key = PurePosixPath(path)
    try:
        found = await storage.exists(key)
    except StorageError as e:
        raise ApiError(503, STORAGE_DOWN) from e
    if not found:
        raise ApiError(404, NO_ASSET)
    return _redirect(storage.presigned_url(key, download_name=download_name))


async def text_file_response(storage: Storage, path: PurePath, download_name: str) -> Response:
    """A small text file naming others by URLs relative to ours (a storyboard's VTT): served whole, even
    from S3, never by a redirect; never cached stale, as it changes when its job runs again."""
    if not storage.is_remote:
        if not Path(path).is_file():
            raise ApiError(404, NO_ASSET)
        return FileResponse(path, media_type=content_type(path), headers={"Cache-Control": "no-cache"},
                            filename=download_name, content_disposition_type="inline")
    return await _whole(storage, PurePosixPath(path), NO_ASSET)


async def hls_file_response(storage: Storage, video_id: str, relative: str) -> Response:
    if not storage.is_remote:
        hls_dir = Path(storage.hls_dir(video_id)).resolve()
        path = (hls_dir / relative).resolve()
        if not path.is_relative_to(hls_dir) or not path.is_file():
            raise ApiError(404, NO_HLS_FILE)
        return FileResponse(path, media_type=content_type(path))
    name = PurePosixPath(relative)
    if not relative or name.is_absolute() or any(part in (".", "..") for part in name.parts):
        raise ApiError(404, NO_HLS_FILE)
    key = PurePosixPath(storage.hls_dir(video_id)) / name
    if name.suffix != ".m3u8":
        return _redirect(storage.presigned_url(key))
    return await _whole(storage, key, NO_HLS_FILE)  # a playlist changes when a ladder is made again


async def _whole(storage: Storage, key: PurePosixPath, missing: str) -> Response:
    """An S3 object read through the web worker and served whole, never cached stale (a playlist, a VTT)."""
    try:
        body = await storage.read_bytes(key)
    except StorageError as e:
        raise ApiError(503, STORAGE_DOWN) from e
    if body is None:
        raise ApiError(404, missing)
    return Response(body, media_type=content_type(key), headers={"Cache-Control": "no-cache"})


def _redirect(url: str) -> RedirectResponse:
    # the URL expires: a browser must not keep the redirect
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
