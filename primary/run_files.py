"""Fencing of outputs, on either storage: a run writes under run-scoped names only (local disk:
cluster/storage.py ``run_partial``; S3: keys under ``.runs/<run_id>/``, cluster/s3_storage.py); the primary
makes them visible only when it accepts the run, and removes those of every run it has refused or given up on.

So a job completes once with one set of outputs, whatever a lost, partitioned or stopped executor does
later. The paths come from the job itself, never from the executor's report. The storages do the moving
(renames on local disk, server-side copies in S3); this module says when, and keeps S3's blocking calls
off the event loop. Run keys nobody removed (an executor killed mid-upload) are swept: all at the start,
then those of runs no longer running, a bounded listing at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cluster import kinds
from cluster.kinds.base import Kind
from cluster.logs import get_logger
from cluster.storage import LocalStorage, StorageError, discard
from primary.jobs import Job

if TYPE_CHECKING:
    from cluster.s3_storage import S3Storage
    from cluster.storage import Storage

log = get_logger()

VideoLookup = Callable[[str], dict[str, Any] | None]


class OutputMissing(Exception):
    """The run says it is done, but its run-scoped output is not there."""


class RunFiles:
    def __init__(self, storage: Storage, video_lookup: VideoLookup) -> None:
        self._storage = storage
        self._video_lookup = video_lookup
        self._accepting: set[str] = set()  # runs whose outputs are being made visible: never discarded meanwhile
        self._aside: set[asyncio.Task[Any]] = set()
        self._swept_to = ""  # the run id the next sweep lists past ("": from the first)

    def sweep_at_start(self) -> int:
        """Remove every run's files and what writers left half-written; blocking, before any run starts."""
        return self._storage.sweep_partials()

    def accept(self, job: Job, run_id: str) -> Coroutine[Any, Any, None]:
        """Make this run's outputs visible, when awaited. OutputMissing when they are not there; StorageError
        (an OSError) when S3 fails past its retries. From this call on, `discard` leaves the run alone: a
        repeated report of it must not remove what is being published."""
        self._accepting.add(run_id)
        return self._accept(job, run_id)

    async def _accept(self, job: Job, run_id: str) -> None:
        try:
            video = self._video_lookup(job.video_id)
            kind = kinds.KINDS.get(job.type)
            if video is None or kind is None:
                return
            target = kind.target(self._storage, job.video_id, job.params, video["info"]["format"])  # file or directory
            if self._storage.is_remote:
                await self._publish(self._storage, job.video_id, run_id, kind, PurePosixPath(target))
            else:
                self._move_in_place(kind, Path(target), run_id)
        finally:
            self._accepting.discard(run_id)

    def discard(self, video_id: str | None, run_id: str) -> None:
        """Remove what a refused or abandoned run wrote (its video is unknown after a restart: search all).
        In S3 the keys go in the background; should that fail, the sweep removes them later."""
        if run_id in self._accepting:
            return  # a repeated report of a run being published: what it wrote is being made visible
        if self._storage.is_remote:
            self._discard_keys(self._storage, run_id)
            return
        try:
            removed = self._storage.discard_run(video_id, run_id)
        except ValueError:
            return  # a malformed id from a report: it names no file of ours
        if removed:
            log.info("removed the files of a refused run", videoId=video_id, runId=run_id, count=removed)

    async def sweep_forever(self, is_running: Callable[[str], bool], interval_s: float) -> None:
        """Every `interval_s`, remove S3 keys of runs no longer running. On local disk an executor of this
        host that dies is lost at once, and its run's files go then."""
        if not self._storage.is_remote:
            return
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep(is_running)
            except StorageError as e:
                log.warning("run keys not swept", error=str(e))

    async def sweep(self, is_running: Callable[[str], bool]) -> int:
        """One round: of the next runs with keys in S3 (a bounded listing), remove the keys of those not
        running; the number of runs removed."""
        storage = self._storage
        assert storage.is_remote
        runs, self._swept_to = await storage.call(storage.listed_runs, self._swept_to)
        stale = [run_id for run_id in runs if not is_running(run_id) and run_id not in self._accepting]
        for run_id in stale:
            await storage.transfer(functools.partial(storage.discard_run, None, run_id))
        if stale:
            log.info("removed the keys of runs no longer running", count=len(stale))
        return len(stale)

    async def settle(self) -> None:
        """Wait for the removals under way."""
        while self._aside:
            await asyncio.gather(*self._aside, return_exceptions=True)

    async def close(self) -> None:
        """Wait for the removals under way, then release the storage."""
        await self.settle()
        await asyncio.to_thread(self._storage.close)

    # --- local disk ------------------------------------------------------------------------

    def _move_in_place(self, kind: Kind, target: Path, run_id: str) -> None:
        partial = LocalStorage.run_partial(target, run_id)
        if not partial.exists():
            raise OutputMissing(f"output missing: the run's {partial.name} is not in storage")
        if kind.directory:
            replaced = LocalStorage.commit_dir(partial, target)
            if replaced is not None:
                self._aside_task(asyncio.to_thread(discard, replaced))
        else:
            LocalStorage.commit(partial, target)

    # --- S3 ------------------------------------------------------------------------------------

    async def _publish(self, storage: S3Storage, video_id: str, run_id: str, kind: Kind,
                       target: PurePosixPath) -> None:
        name = target.relative_to(storage.video_dir(video_id)).as_posix()
        try:
            count = await storage.transfer(functools.partial(storage.publish_run, video_id, run_id, name, kind.last))
        except FileNotFoundError as e:
            raise OutputMissing(str(e)) from e
        log.info("published a run's outputs", videoId=video_id, runId=run_id, objects=count)

    def _discard_keys(self, storage: S3Storage, run_id: str) -> None:
        try:
            storage.run_root(run_id)
        except ValueError:
            return  # a malformed id from a report: it names no key of ours

        async def remove() -> None:
            try:
                removed = await storage.transfer(functools.partial(storage.discard_run, None, run_id))
            except StorageError as e:
                log.warning("the keys of a refused run not removed: the sweep will", runId=run_id, error=str(e))
                return
            if removed:
                log.info("removed the keys of a refused run", runId=run_id, count=removed)

        self._aside_task(remove())

    def _aside_task(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)
