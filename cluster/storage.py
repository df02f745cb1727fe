"""File storage: where each video's original and outputs live.

The one module that knows the layout ``storage/<videoId>/...``; files are
written under a temporary name and moved in place only when complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "flv": "video/x-flv",
    "jpg": "image/jpeg",
    "aac": "audio/aac",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
}

HLS_MASTER = "master.m3u8"


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / ".tmp"

    def prepare(self) -> None:
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def video_dir(self, video_id: str) -> Path:
        if not video_id.isalnum():
            raise ValueError(f"bad video id {video_id!r}")
        return self.root / video_id

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

    def job_output(self, job_type: str, video_id: str, params: dict[str, Any], source_fmt: str) -> Path:
        """The file a job makes; for `hls`, the master playlist of its directory."""
        if job_type == "resize":
            return self.resized(video_id, int(params["width"]), int(params["height"]), source_fmt)
        if job_type == "convert":
            return self.converted(video_id, str(params["format"]))
        if job_type == "extract-audio":
            return self.audio(video_id)
        if job_type == "hls":
            return self.hls_master(video_id)
        raise ValueError(f"no output for job type {job_type!r}")

    def new_temp(self, suffix: str = "") -> Path:
        return self.temp_dir / f"{uuid.uuid4().hex}{suffix}.part"

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

    def discard_run(self, video_id: str, run_id: str) -> int:
        """Remove whatever this run wrote under its run-scoped names; the number of paths removed."""
        if not run_id.isalnum():
            raise ValueError(f"bad run id {run_id!r}")
        stale = list(self.video_dir(video_id).glob(f".*.{run_id}.part"))
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


def discard(path: Path) -> None:
    """Remove a file or a directory tree, if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
