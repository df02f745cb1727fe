"""Fencing of outputs: a run writes under run-scoped names (cluster/storage.py ``run_partial``); the primary
moves them in place only when it accepts the run, and removes those of every run it has given up on.

So a job completes once with one set of outputs, whatever a lost, partitioned or stopped executor does
later. The paths come from the job itself, never from the executor's report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import kinds
from cluster.logs import get_logger
from cluster.storage import LocalStorage, discard
from primary.jobs import Job

log = get_logger()

VideoLookup = Callable[[str], dict[str, Any] | None]


class OutputMissing(Exception):
    """The run says it is done, but its run-scoped output is not there."""


class RunFiles:
    def __init__(self, storage: LocalStorage, video_lookup: VideoLookup) -> None:
        self._storage = storage
        self._video_lookup = video_lookup
        self._aside: set[asyncio.Task[None]] = set()

    def accept(self, job: Job, run_id: str) -> None:
        """Move this run's outputs in place; raises OutputMissing when they are not there."""
        video = self._video_lookup(job.video_id)
        kind = kinds.KINDS.get(job.type)
        if video is None or kind is None:
            return
        target = kind.target(self._storage, job.video_id, job.params, video["info"]["format"])  # a file or a directory
        partial = LocalStorage.run_partial(target, run_id)
        if not partial.exists():
            raise OutputMissing(f"output missing: the run's {partial.name} is not in storage")
        if kind.directory:
            replaced = LocalStorage.commit_dir(partial, target)
            if replaced is not None:
                self._discard_later(replaced)
        else:
            LocalStorage.commit(partial, target)

    def discard(self, video_id: str | None, run_id: str) -> None:
        """Remove what a refused or abandoned run wrote (its video is unknown after a restart: search all)."""
        try:
            removed = self._storage.discard_run(video_id, run_id)
        except ValueError:
            return  # a malformed id from a report: it names no file of ours
        if removed:
            log.info("removed the files of a refused run", videoId=video_id, runId=run_id, count=removed)

    def _discard_later(self, path: Path) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(discard, path))
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)
