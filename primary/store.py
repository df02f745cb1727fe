"""The job store: every job, event and video, in SQLite (WAL) under the data dir.

The only module that speaks SQL. The primary is its only writer (``JobStore``); long reads run on
``ReadStore``, read-only connections (one per thread) that never block the writer. Every list is cut
into pages by an index ending in ``(created_at, id)``; a cursor names the last row of a page.
A server database can replace it behind the same methods.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from cluster.protocol import Event, JobState, Priority
from primary.jobs import Attempt, Job
from primary.migrations import migrate
from primary.transaction import Transaction, connect

_JOB_COLUMNS = [f.name for f in fields(Job)]
_IMMUTABLE = {"id", "type", "video_id", "params", "owner", "created_at"}  # never change once a job exists
_ATTEMPT_COLUMNS = [f.name for f in fields(Attempt)]
_ENDED_AT = "COALESCE(completed_at, CASE WHEN state = 'dead' THEN failed_at END, cancelled_at)"
_FINAL = "('completed', 'dead', 'cancelled')"  # as in the partial index jobs_ended
_JSON_COLUMNS = {"params", "result"}
_UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.DELAYED.value)


def _upsert(columns: Iterable[str]) -> str:
    return (f"INSERT INTO jobs ({','.join(_JOB_COLUMNS)}) VALUES ({','.join('?' for _ in _JOB_COLUMNS)}) "
            "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns))


_SAVE_JOB = _upsert(c for c in _JOB_COLUMNS if c != "id")
# the engine's transitions: the indexes on what never changes (owner, type, video, creation) are not rewritten
_SAVE_TRANSITION = _upsert(c for c in _JOB_COLUMNS if c not in _IMMUTABLE)
_SAVE_ATTEMPT = (f"INSERT OR REPLACE INTO attempts ({','.join(_ATTEMPT_COLUMNS)}) "
                 f"VALUES ({','.join('?' for _ in _ATTEMPT_COLUMNS)})")
VIDEO_CACHE_SIZE = 1024
DELETE_BATCH = 200  # rows per transaction when removing many: ~10 ms, so neither writer nor loop is held long


class CursorError(ValueError):
    """A ``before`` cursor this store did not make."""


def job_cursor(job: Job) -> str:
    return row_cursor(job.created_at or 0.0, job.id)


def video_cursor(video: dict[str, Any]) -> str:
    return row_cursor(video["createdAt"], video["videoId"])


class StoreReads:
    """The queries, shared by the writer's connection and the read-only ones."""

    @property
    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    # jobs

    def get_job(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_from_row(row) if row else None

    def list_jobs(self, *, state: str | None = None, video_id: str | None = None, job_type: str | None = None,
                  owner: str | None = None, limit: int = 100, before: str | None = None) -> list[Job]:
        """Newest first, from just after the ``before`` cursor."""
        rows = page_rows(self._db, "jobs", limit, before, state=state, video_id=video_id, type=job_type, owner=owner)
        return [_job_from_row(r) for r in rows]

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self._db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (job_id,))
        return [Attempt(**{c: r[c] for c in _ATTEMPT_COLUMNS}) for r in rows]

    def unfinished_jobs(self) -> list[Job]:
        """Every queued, running and delayed job, in queue order; jobs share equal parameters and names
        (read-only once made), so that a million queued jobs cost the primary little memory."""
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE state IN ({','.join('?' for _ in _UNFINISHED)}) ORDER BY queue_order",
            _UNFINISHED)
        shared: dict[str, Any] = {}
        return [_job_from_row(r, shared) for r in rows]

    def unfinished_of_video(self, video_id: str) -> list[str]:
        """The ids of a video's queued, running and delayed jobs (read through the video's own index)."""
        rows = self._db.execute(f"SELECT id FROM jobs WHERE video_id = ? AND state IN "
                                f"({','.join('?' for _ in _UNFINISHED)})", (video_id, *_UNFINISHED))
        return [r[0] for r in rows]

    def max_queue_order(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(queue_order), 0) FROM jobs").fetchone()[0]

    def last_starts(self, keys: Sequence[tuple[Priority, str]]) -> dict[tuple[Priority, str], float | None]:
        """The latest start of each (priority, owner)'s jobs still stored (an index seek each)."""
        query = "SELECT MAX(started_at) FROM jobs WHERE owner = ? AND priority = ?"
        return {(p, owner): self._db.execute(query, (owner, p.value)).fetchone()[0] for p, owner in keys}

    def count_by_state_and_type(self) -> list[tuple[str, str, int]]:
        rows = self._db.execute("SELECT state, type, n FROM job_counts WHERE n > 0 ORDER BY state, type")
        return [(r[0], r[1], r[2]) for r in rows]

    def count_dead_by_type(self, owner: str) -> dict[str, int]:
        """One user's dead jobs of each type (through the (owner, state) index: that user's dead jobs only)."""
        rows = self._db.execute("SELECT type, COUNT(*) FROM jobs WHERE owner = ? AND state = ? GROUP BY type",
                                (owner, JobState.DEAD.value))
        return {r[0]: r[1] for r in rows}

    def count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state, _, n in self.count_by_state_and_type():
            counts[state] = counts.get(state, 0) + n
        return counts

    def ended_since(self, since_ms: float, limit: int = 100_000) -> list[tuple[str, float]]:
        """(final state, end time) of jobs that reached a final state since ``since_ms``, newest first."""
        rows = self._db.execute(
            f"SELECT state, {_ENDED_AT} AS ended FROM jobs INDEXED BY jobs_ended WHERE state IN {_FINAL} AND {_ENDED_AT} >= ? "
            "ORDER BY ended DESC LIMIT ?", (since_ms, limit))
        return [(r[0], r[1]) for r in rows]

    def attempt_times_since(self, since_ms: float, limit: int = 100_000) -> list[tuple[float, float, float | None]]:
        """(start time, wait ms, run ms or None) of attempts started since ``since_ms``, newest first."""
        rows = self._db.execute(
            "SELECT started_at, started_at - queued_at, "
            "CASE WHEN outcome = 'completed' THEN ended_at - started_at END "
            "FROM attempts WHERE started_at >= ? AND queued_at IS NOT NULL ORDER BY started_at DESC LIMIT ?",
            (since_ms, limit))
        return [(r[0], r[1], r[2]) for r in rows]

    # settings

    def get_setting(self, name: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    # events

    def last_seq(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def events_since(self, seq: int, limit: int = 1000, owner: str | None = None) -> list[Event]:
        """The events after ``seq``, in order; with ``owner``, only that user's and the cluster's notices
        (each read through the (owner, seq) index, so a page costs the page)."""
        return [Event(r["event"], r["seq"], r["ts"], json.loads(r["data"])) for r in self._event_rows(seq, limit, owner)]

    def event_bodies_since(self, seq: int, limit: int = 1000, owner: str | None = None) -> list[str]:
        """As ``events_since``, as the JSON bodies the PUB socket carries, made without parsing the data."""
        return [f'{{"event":{json.dumps(r["event"])},"seq":{r["seq"]},"ts":{json.dumps(r["ts"])},"data":{r["data"]}}}'
                for r in self._event_rows(seq, limit, owner)]

    def _event_rows(self, seq: int, limit: int, owner: str | None) -> list[sqlite3.Row]:
        if owner is None:
            rows = list(self._db.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)))
        else:
            rows = []
            for who in {owner, ""}:
                rows += self._db.execute("SELECT * FROM events WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?",
                                         (who, seq, limit)).fetchall()
            rows = sorted(rows, key=lambda r: r["seq"])[:limit]
        return rows

    # videos

    def get_video(self, video_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        return _video_from_row(row) if row else None

    def list_videos(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every video (of ``owner``), oldest first: for tools; the API pages with ``page_videos``."""
        if owner is None:
            rows = self._db.execute("SELECT * FROM videos ORDER BY created_at")
        else:
            rows = self._db.execute("SELECT * FROM videos WHERE owner = ? ORDER BY created_at", (owner,))
        return [_video_from_row(r) for r in rows]

    def page_videos(self, owner: str | None = None, limit: int = 100, before: str | None = None) -> list[dict[str, Any]]:
        """Newest first, from just after the ``before`` cursor."""
        return [_video_from_row(r) for r in page_rows(self._db, "videos", limit, before, owner=owner)]

    def video_outputs(self, video_ids: Sequence[str]) -> dict[str, list[Job]]:
        """The newest job of each output of these videos (a size, a format, the audio, the ladder)."""
        if not video_ids:
            return {}
        marks = ",".join("?" for _ in video_ids)
        rows = self._db.execute(f"SELECT jobs.* FROM video_outputs JOIN jobs ON jobs.id = video_outputs.job_id "
                                f"WHERE video_outputs.video_id IN ({marks}) ORDER BY jobs.created_at DESC", video_ids)
        outputs: dict[str, list[Job]] = {video_id: [] for video_id in video_ids}
        for row in rows:
            outputs[row["video_id"]].append(_job_from_row(row))
        return outputs


class JobStore(StoreReads):
    """The writer: one connection, used only on the primary's loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = connect(path)
        self.schema_version = migrate(self._writer)
        self._checkpointer: sqlite3.Connection | None = None
        self._videos: dict[str, dict[str, Any]] = {}  # video id -> row, oldest first
        self.on_jobs_deleted: Callable[[list[str]], None] = lambda job_ids: None  # after each commit (pipelines)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._writer

    @property
    def writer(self) -> sqlite3.Connection:
        """For the stores whose rows the engine writes in its own transactions (pipelines)."""
        return self._writer

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._writer.close()

    def checkpoint_elsewhere(self) -> None:
        """From now on the writer never checkpoints the WAL itself (a checkpoint syncs the file, which can
        take long on a busy disk, and would hold the loop): call ``checkpoint`` from a thread instead."""
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)

    def checkpoint(self) -> None:
        """Copy the WAL into the database without blocking the writer or the readers (for a thread)."""
        if self._checkpointer is not None:
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def get_video(self, video_id: str) -> dict[str, Any] | None:
        """From a small cache (read-only: the same dict each time): every job request looks its video up,
        and only this writer changes videos."""
        video = self._videos.get(video_id)
        if video is None:
            video = super().get_video(video_id)
            if video is not None:
                if len(self._videos) >= VIDEO_CACHE_SIZE:
                    self._videos.pop(next(iter(self._videos)))
                self._videos[video_id] = video
        return video

    # jobs

    def save(self, job: Job, events: Iterable[Event] = (), attempt: Attempt | None = None) -> None:
        """Write a job, the events of its transition and its attempt record in one transaction."""
        self._save(_SAVE_JOB, [job], list(events), [attempt] if attempt is not None else [])

    def save_batch(self, jobs: Sequence[Job], events: Sequence[Event], attempts: Sequence[Attempt],
                   writes: Sequence[Callable[[sqlite3.Connection], None]] = ()) -> None:
        """Several transitions in one transaction (group commit). Only for jobs whose identity (type,
        video, owner, parameters, creation) never changes once stored: the engine's. ``writes``: other
        tables' rows (a pipeline's) that must be stored with these transitions or not at all."""
        self._save(_SAVE_TRANSITION, jobs, events, attempts, writes)

    def _save(self, statement: str, jobs: Sequence[Job], events: Sequence[Event],
              attempts: Sequence[Attempt], writes: Sequence[Callable[[sqlite3.Connection], None]] = ()) -> None:
        with self._transaction():
            for write in writes:
                write(self._db)
            self._db.executemany(statement, [_job_row(job) for job in jobs])
            self._insert_events(events)
            if attempts:
                self._db.executemany(_SAVE_ATTEMPT, [[getattr(a, c) for c in _ATTEMPT_COLUMNS] for a in attempts])

    def save_rows(self, jobs: Iterable[Job], events: Iterable[Event] = ()) -> None:
        """Many jobs at once (a bulk import, the benchmark's fill), in one transaction."""
        with self._transaction():
            self._db.executemany(_SAVE_JOB, (_job_row(job) for job in jobs))
            self._insert_events(events)

    def delete_job(self, job_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM attempts WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.on_jobs_deleted([job_id])

    def delete_finished(self, before_ms: float) -> int:
        """Remove completed, dead and cancelled jobs that ended before ``before_ms``, with their attempts."""
        return sum(self.delete_ended(state, before_ms) for state in
                   (JobState.COMPLETED.value, JobState.DEAD.value, JobState.CANCELLED.value))

    def delete_ended(self, state: str, before_ms: float, max_rows: int | None = None,
                     job_type: str | None = None) -> int:
        """Remove jobs in final ``state`` (of ``job_type``, if given) that ended before ``before_ms``, oldest
        first, in small batches. A job ends after it was created, so only rows created before the cut are read."""
        typed = " AND type = ?" if job_type is not None else ""
        return self._delete_batches(
            f"SELECT id FROM jobs WHERE state = ? AND created_at < ? AND {_ENDED_AT} < ?{typed} "
            "ORDER BY created_at, id LIMIT ?", (state, before_ms, before_ms, *([job_type] if typed else [])),
            max_rows)

    def delete_oldest(self, state: str, count: int) -> int:
        """Remove the ``count`` oldest jobs (by creation) in final ``state``, in small batches."""
        return self._delete_batches("SELECT id FROM jobs WHERE state = ? ORDER BY created_at, id LIMIT ?",
                                    (state,), count)

    def _delete_batches(self, select: str, args: tuple[Any, ...], max_rows: int | None) -> int:
        removed = 0
        while max_rows is None or removed < max_rows:
            batch = DELETE_BATCH if max_rows is None else min(DELETE_BATCH, max_rows - removed)
            with self._transaction():
                ids = [(r[0],) for r in self._db.execute(select, (*args, batch))]
                self._db.executemany("DELETE FROM attempts WHERE job_id = ?", ids)
                self._db.executemany("DELETE FROM jobs WHERE id = ?", ids)
            self.on_jobs_deleted([job_id for (job_id,) in ids])
            removed += len(ids)
            if len(ids) < batch:
                break
        return removed

    # settings

    def set_setting(self, name: str, value: str, events: Iterable[Event] = ()) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value))
            self._insert_events(events)

    def integrity_problems(self) -> list[str]:
        """SQLite's own check plus the store's invariants; empty when all is well."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        seqs = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM events").fetchone()
        if seqs[0] != seqs[1]:
            problems.append("duplicate event seq")
        orphans = self._db.execute("SELECT COUNT(*) FROM attempts WHERE job_id NOT IN (SELECT id FROM jobs)")
        if orphans.fetchone()[0]:
            problems.append("attempts of unknown jobs")
        counted = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM job_counts").fetchone()[0]
        if counted != self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]:
            problems.append("job counts out of step")
        return problems

    # events

    def append_events(self, events: Iterable[Event]) -> None:
        with self._transaction():
            self._insert_events(events)

    def prune_events(self, keep: int, before_ms: float | None = None, max_rows: int | None = None) -> int:
        """Keep at most ``keep`` events, none older than ``before_ms``; the newest always stays (it holds the seq).
        Removed oldest first, in small batches (at most ``max_rows`` in this call)."""
        last = self.last_seq()
        cut = last - max(1, keep) + 1  # the first seq kept
        if before_ms is not None:
            row = self._db.execute("SELECT seq FROM events WHERE ts >= ? ORDER BY ts LIMIT 1", (before_ms,)).fetchone()
            cut = max(cut, min(row[0] if row else last, last))
        removed = 0
        while max_rows is None or removed < max_rows:
            batch = DELETE_BATCH if max_rows is None else min(DELETE_BATCH, max_rows - removed)
            with self._transaction():
                count = self._db.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ? "
                                         "ORDER BY seq LIMIT ?)", (cut, batch)).rowcount
            removed += count
            if count < batch:
                break
        return removed

    # videos

    def add_video(self, video_id: str, owner: str, name: str, info: dict[str, Any], created_at: float) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO videos (id, owner, name, info, created_at) VALUES (?, ?, ?, ?, ?)",
                (video_id, owner, name, json.dumps(info), created_at),
            )

    def delete_video(self, video_id: str) -> None:
        """The video and its jobs' history; its events stay until they are pruned."""
        self._delete_batches("SELECT id FROM jobs WHERE video_id = ? LIMIT ?", (video_id,), None)
        self._videos.pop(video_id, None)
        with self._transaction():
            self._db.execute("DELETE FROM video_outputs WHERE video_id = ?", (video_id,))
            self._db.execute("DELETE FROM videos WHERE id = ?", (video_id,))

    # helpers

    def _insert_events(self, events: Iterable[Event]) -> None:
        self._db.executemany(
            "INSERT INTO events (seq, event, ts, data, owner) VALUES (?, ?, ?, ?, ?)",
            [(e.seq, e.event, e.ts, json.dumps(e.data, separators=(",", ":")), _event_owner(e)) for e in events],
        )

    def _transaction(self) -> Transaction:
        return Transaction(self._db)


class ReadStore(StoreReads):
    """Read-only connections to the same file, one per thread (for ``asyncio.to_thread``): a long read
    there never holds the primary's loop nor the writer."""

    def __init__(self, path: Path) -> None:
        self._uri = f"{path.resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
            db.row_factory = sqlite3.Row
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._opened:
                db.close()
            self._opened.clear()


def page_rows(db: sqlite3.Connection, table: str, limit: int, before: str | None,
              **equal: str | None) -> sqlite3.Cursor:
    """A page of ``table`` (jobs, videos, pipelines) newest first, from just after the ``before`` cursor,
    with each ``equal`` filter that is set (a column = its value)."""
    clauses, args = _filters(**equal)
    if before:
        clauses.append("(created_at, id) < (?, ?)")
        args.extend(_parse_cursor(before))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return db.execute(f"SELECT * FROM {table} {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit))


def _filters(**values: str | None) -> tuple[list[str], list[Any]]:
    clauses, args = [], []
    for column, value in values.items():
        if value:
            clauses.append(f"{column} = ?")
            args.append(value)
    return clauses, args


def row_cursor(created_at: float, row_id: str) -> str:
    """The cursor of a list ordered by (created_at, id), newest first: ``?before=`` takes it back."""
    return f"{created_at!r}~{row_id}"


def _parse_cursor(cursor: str) -> tuple[float, str]:
    created, sep, row_id = cursor.partition("~")
    try:
        created_at = float(created)
    except ValueError as e:
        raise CursorError(f"not a cursor of this list: {cursor!r}") from e
    if not sep or not row_id:
        raise CursorError(f"not a cursor of this list: {cursor!r}")
    return created_at, row_id


def _event_owner(event: Event) -> str:
    return str(event.data.get("userId") or "") if "jobId" in event.data else ""


def _job_row(job: Job) -> list[Any]:
    row = []
    for column in _JOB_COLUMNS:
        value = getattr(job, column)
        if column in _JSON_COLUMNS:
            value = json.dumps(value) if value is not None else None
        elif column in ("state", "priority"):
            value = value.value
        row.append(value)
    return row


def _job_from_row(row: sqlite3.Row, shared: dict[str, Any] | None = None) -> Job:
    values = {column: row[column] for column in _JOB_COLUMNS}
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column]) if values[column] is not None else None
    if shared is not None:
        params = shared.get(row["params"])
        if params is None:
            params = shared[row["params"]] = {sys.intern(k): v for k, v in values["params"].items()}
        values["params"] = params
        for column in ("type", "video_id", "owner"):
            values[column] = sys.intern(values[column])
        for column in ("timeout_s", "progress"):  # mostly the same few values
            values[column] = shared.setdefault(f"{column}={values[column]!r}", values[column])
        if values["queued_at"] == values["created_at"]:  # queued when made: one float object for both
            values["queued_at"] = values["created_at"]
    values["state"] = JobState(values["state"])
    values["priority"] = Priority(values["priority"])
    return Job(**values)


def _video_from_row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "videoId": row["id"],
        "owner": row["owner"],
        "name": row["name"],
        "info": json.loads(row["info"]),
        "createdAt": row["created_at"],
    }
