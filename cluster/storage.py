"""File storage: where each video's original and outputs live.

The names of a video's files: ``<videoId>/original.<ext>``, ``thumbnail.jpg``... (`Layout`; each kind of
job names its outputs in its module, `cluster.kinds`, mostly through these), on
local disk under ``storage/`` (`LocalStorage`, here) or in S3 under a prefix (`cluster.s3_storage`).
Files are written under a temporary name and moved in place only when complete.

What the processes need of a storage, either kind:
- the names of a video's files (`Layout`);
- the web worker: `upload_sink` (an upload's body), `remove_video`, and for downloads `is_remote`:
  local files are served, S3 objects redirected to (`exists`, `presigned_url`, `read_bytes`);
- an executor: `workspace` (local files to run ffmpeg on) and `save_outputs` (put them under the run's
  names in storage: on local disk they are there already);
- the primary (primary/run_files.py): make an accepted run's outputs visible (`commit`, `commit_dir`;
  S3: `publish_run`), remove a refused one's (`discard_run`), `sweep_partials` at start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.config import ClusterConfig
    from cluster.s3_storage import S3Storage, S3UploadSink

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "flv": "video/x-flv",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "vtt": "text/vtt",
    "aac": "audio/aac",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
}

HLS_MASTER = "master.m3u8"


@dataclass(frozen=True)
class StorageSettings:
    """Where media lives, as the primary hands it to every process: never credentials (each host has its own)."""
    kind: str = "local"  # "local" (under the data dir) or "s3"
    bucket: str = ""
    prefix: str = ""
    endpoint: str = ""
    region: str = ""
    url_expiry_s: float = 300.0

    @classmethod
    def from_config(cls, config: ClusterConfig) -> StorageSettings:
        if not config.storage:
            return cls()
        bucket, _, prefix = config.storage.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError("--storage s3://BUCKET/PREFIX needs a bucket")
        return cls("s3", bucket, prefix.strip("/"), config.s3_endpoint, config.s3_region, config.s3_url_expiry_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StorageSettings:
        return cls(**values)


def open_storage(config: ClusterConfig, settings: StorageSettings | None = None) -> LocalStorage | S3Storage:
    """The storage the config (or settings handed out by the primary) names."""
    settings = settings or StorageSettings.from_config(config)
    if settings.kind == "s3":
        from cluster.s3_storage import S3Storage  # boto3 loads only where S3 is used

        return S3Storage(settings, scratch_root(config))
    return LocalStorage(config.storage_dir)


def scratch_root(config: ClusterConfig) -> Path:
    """Local room for upload temp files and executors' job files when media lives elsewhere."""
    if config.scratch_dir:
        return Path(config.scratch_dir)
    return Path(tempfile.gettempdir()) / f"video-cluster-{os.getuid()}"


class StorageError(OSError):
    """A storage call failed after its retries (S3 unreachable, refusing...)."""


def check_storage(config: ClusterConfig) -> None:
    """At the primary's start: S3 storage must be usable now, not fail a job later
    (`cluster.s3_storage.StorageUnavailable` says why)."""
    settings = StorageSettings.from_config(config)
    if settings.kind == "s3":
        from cluster.s3_storage import check_bucket

        check_bucket(settings)


class Layout:
    """The names of a video's files, under `video_dir` (a local directory or an S3 key prefix)."""

    def video_dir(self, video_id: str) -> Any:
        raise NotImplementedError

    @staticmethod
    def check_video_id(video_id: str) -> str:
        if not video_id.isalnum():
            raise ValueError(f"bad video id {video_id!r}")
        return video_id

    def original(self, video_id: str, fmt: str) -> Path:
        return self.video_dir(video_id) / f"original.{fmt}"

    def thumbnail(self, video_id: str) -> Path:
        return self.video_dir(video_id) / "thumbnail.jpg"

    def resized(self, video_id: str, width: int, height: int, fmt: str) -> Path:
        return self.video_dir(video_id) / f"{width}x{height}.{fmt}"

    def converted(self, video_id: str, fmt: str) -> Path:
        return self.video_dir(video_id) / f"converted.{fmt}"

    def audio(self, video_id: str) -> Path:
        return self.video_dir(video_id) / "audio.aac"

    def hls_dir(self, video_id: str) -> Path:
        return self.video_dir(video_id) / "hls"

    def hls_master(self, video_id: str) -> Path:
        return self.hls_dir(video_id) / HLS_MASTER


class LocalStorage(Layout):
    is_remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / ".tmp"

    def prepare(self) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Nothing to release (an S3 storage shuts its pool and clients)."""

    def video_dir(self, video_id: str) -> Path:
        return self.root / self.check_video_id(video_id)

    def new_temp(self, suffix: str = "") -> Path:
        return self.temp_dir / f"{uuid.uuid4().hex}{suffix}.part"

    def upload_sink(self, ext: str) -> LocalUploadSink:
        return LocalUploadSink(self, ext)

    @asynccontextmanager
    async def workspace(self, video_id: str, run_id: str, source_fmt: str) -> AsyncIterator[LocalStorage]:
        """Where a job reads its input and writes its outputs: here, the storage itself."""
        yield self

    async def save_outputs(self, work: LocalStorage, video_id: str, run_id: str, output: Path,
                           last: str | None = None) -> None:
        """Nothing to do: the job moved its output in place itself (or left it under its run-scoped name for
        the primary to)."""

    @staticmethod
    def partial(final: Path, tag: str = "") -> Path:
        """The name a file is written under until it is complete; a retry overwrites its predecessor's.
        ``tag`` tells apart jobs writing one file that may run at once (two fits of one size)."""
        return final.with_name(f".{final.name}{'.' + tag if tag else ''}.part")

    @staticmethod
    def run_partial(final: Path, run_id: str) -> Path:
        """The name one run writes `final` (a file or a directory) under: fenced by the run id, so two runs of
        one job never share a file, and only the run the primary accepts is moved in place (primary/run_files.py)."""
        if not run_id.isalnum():
            raise ValueError(f"bad run id {run_id!r}")
        return final.with_name(f".{final.name}.{run_id}.part")

    def discard_run(self, video_id: str | None, run_id: str) -> int:
        """Remove whatever this run wrote under its run-scoped names (under every video's directory when its
        video is unknown); the number of paths removed."""
        if not run_id.isalnum():
            raise ValueError(f"bad run id {run_id!r}")
        pattern = f".*.{run_id}.part"
        stale = list(self.video_dir(video_id).glob(pattern) if video_id else self.root.glob(f"*/{pattern}"))
        for path in stale:
            discard(path)
        return len(stale)

    def sweep_partials(self) -> int:
        """Remove what writers that died left half-written (files and directories); only safe while no writer runs."""
        stale = [*self.root.glob("*/.*.part"), *self.temp_dir.glob("*.part")]
        for path in stale:
            discard(path)
        return len(stale)

    @staticmethod
    def commit(temp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    @staticmethod
    def commit_dir(temp: Path, final: Path) -> Path | None:
        """Move a complete directory in place of `final`; return the one it replaced, renamed aside.

        A reader sees the old directory, for an instant none, or the new one: never a mix of both.
        The caller removes what is returned (`discard`), which can take a while for a big tree.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        # A directory cannot replace a non-empty one, so the old one goes aside first, under a
        # partial name that sweep_partials removes should the caller die before discarding it.
        aside = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old.part")
        try:
            os.replace(final, aside)
        except FileNotFoundError:
            os.replace(temp, final)
            return None
        os.replace(temp, final)
        return aside

    def remove_video(self, video_id: str) -> None:
        shutil.rmtree(self.video_dir(video_id), ignore_errors=True)


class LocalUploadSink:
    """An upload's body, written to a temp file; `commit` moves it (and its thumbnail) in place."""

    def __init__(self, storage: LocalStorage, ext: str) -> None:
        self.video_id = secrets.token_hex(8)
        self.path = storage.new_temp()
        self._storage = storage
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by finish or abort

    async def write(self, chunk: bytes) -> None:
        # chunk writes land in the page cache in microseconds: not worth a thread hop each
        self._file.write(chunk)

    async def finish(self) -> None:
        """The whole body is in: close the temp file for the probe."""
        self._file.close()

    async def commit(self, fmt: str, thumbnail: Path) -> None:
        self._storage.commit(thumbnail, self._storage.thumbnail(self.video_id))
        self._storage.commit(self.path, self._storage.original(self.video_id, fmt))

    async def abort(self) -> None:
        """Nothing of the upload is left afterwards (the caller removes a thumbnail already in place)."""
        self._file.close()
        self.path.unlink(missing_ok=True)


def discard(path: Path) -> None:
    """Remove a file or a directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def content_type(path: PurePath) -> str:
    return CONTENT_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")


if TYPE_CHECKING:
    Storage = LocalStorage | S3Storage
    UploadSink = LocalUploadSink | S3UploadSink
