"""The job store: every job, event and video, in SQLite (WAL) under the data dir.

The only module that speaks SQL. The primary is its only writer; a server
database can replace it behind the same methods.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from cluster.protocol import Event, JobState, Priority
from primary.jobs import Attempt, Job

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    video_id TEXT NOT NULL,
    params TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    priority TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    progress REAL NOT NULL,
    result TEXT,
    error TEXT,
    created_at REAL,
    queued_at REAL,
    started_at REAL,
    completed_at REAL,
    failed_at REAL,
    cancelled_at REAL,
    retry_at REAL,
    queue_order INTEGER NOT NULL,
    run_id TEXT,
    executor TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_video ON jobs(video_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    executor TEXT,
    queued_at REAL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    error TEXT,
    command TEXT,
    stderr TEXT,
    PRIMARY KEY (job_id, number)
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    info TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

_JOB_COLUMNS = [f.name for f in fields(Job)]
_ATTEMPT_COLUMNS = [f.name for f in fields(Attempt)]
_ENDED_AT = "COALESCE(completed_at, CASE WHEN state = 'dead' THEN failed_at END, cancelled_at)"
_JSON_COLUMNS = {"params", "result"}


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # jobs

    def save(self, job: Job, events: Iterable[Event] = (), attempt: Attempt | None = None) -> None:
        """Write a job, the events of its transition and its attempt record in one transaction."""
        row = _job_row(job)
        marks = ",".join("?" for _ in _JOB_COLUMNS)
        with self._transaction():
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({','.join(_JOB_COLUMNS)}) VALUES ({marks})", row)
            self._insert_events(events)
            if attempt is not None:
                self._db.execute(f"INSERT OR REPLACE INTO attempts ({','.join(_ATTEMPT_COLUMNS)}) "
                                 f"VALUES ({','.join('?' for _ in _ATTEMPT_COLUMNS)})",
                                 [getattr(attempt, c) for c in _ATTEMPT_COLUMNS])

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self._db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (job_id,))
        return [Attempt(**{c: r[c] for c in _ATTEMPT_COLUMNS}) for r in rows]

    def delete_job(self, job_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM attempts WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def delete_finished(self, before_ms: float) -> int:
        """Remove completed, dead and cancelled jobs that ended before ``before_ms``, with their attempts."""
        finished = (JobState.COMPLETED.value, JobState.DEAD.value, JobState.CANCELLED.value)
        with self._transaction():
            ids = [r[0] for r in self._db.execute(
                f"SELECT id FROM jobs WHERE state IN (?, ?, ?) AND {_ENDED_AT} < ?", (*finished, before_ms))]
            self._db.executemany("DELETE FROM attempts WHERE job_id = ?", [(i,) for i in ids])
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    def count_by_state_and_type(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], r[2]) for r in self._db.execute("SELECT state, type, COUNT(*) FROM jobs GROUP BY 1, 2")]

    def ended_since(self, since_ms: float) -> list[tuple[str, float]]:
        """(final state, end time) of every job that reached a final state since ``since_ms``."""
        rows = self._db.execute(f"SELECT state, {_ENDED_AT} FROM jobs WHERE {_ENDED_AT} >= ?", (since_ms,))
        return [(r[0], r[1]) for r in rows]

    def attempt_times_since(self, since_ms: float) -> list[tuple[float, float, float | None]]:
        """(start time, wait ms, run ms or None) of every attempt started since ``since_ms``."""
        rows = self._db.execute(
            "SELECT started_at, started_at - queued_at, "
            "CASE WHEN outcome = 'completed' THEN ended_at - started_at END "
            "FROM attempts WHERE started_at >= ? AND queued_at IS NOT NULL", (since_ms,))
        return [(r[0], r[1], r[2]) for r in rows]

    # settings

    def get_setting(self, name: str, default: str = "") -> str:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

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
        return problems

    def get_job(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_from_row(row) if row else None

    def list_jobs(self, *, state: str | None = None, video_id: str | None = None,
                  job_type: str | None = None, owner: str | None = None, limit: int = 100) -> list[Job]:
        clauses, args = [], []
        for column, value in (("state", state), ("video_id", video_id), ("type", job_type), ("owner", owner)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [_job_from_row(r) for r in rows]

    def unfinished_jobs(self) -> list[Job]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?, ?) ORDER BY queue_order",
            (JobState.QUEUED.value, JobState.RUNNING.value, JobState.DELAYED.value),
        )
        return [_job_from_row(r) for r in rows]

    def max_queue_order(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(queue_order), 0) FROM jobs").fetchone()[0]

    def count_by_state(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: n for state, n in rows}

    # events

    def last_seq(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]

    def append_events(self, events: Iterable[Event]) -> None:
        with self._transaction():
            self._insert_events(events)

    def events_since(self, seq: int, limit: int = 1000) -> list[Event]:
        rows = self._db.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [Event(r["event"], r["seq"], r["ts"], json.loads(r["data"])) for r in rows]

    def prune_events(self, keep: int, before_ms: float | None = None) -> int:
        """Keep at most ``keep`` events, none older than ``before_ms``; the newest always stays (it holds the seq)."""
        with self._transaction():
            removed = self._db.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?",
                                       (max(1, keep),)).rowcount
            if before_ms is not None:
                removed += self._db.execute("DELETE FROM events WHERE ts < ? AND seq < (SELECT MAX(seq) FROM events)",
                                            (before_ms,)).rowcount
        return removed

    # videos

    def add_video(self, video_id: str, owner: str, name: str, info: dict[str, Any], created_at: float) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO videos (id, owner, name, info, created_at) VALUES (?, ?, ?, ?, ?)",
                (video_id, owner, name, json.dumps(info), created_at),
            )

    def get_video(self, video_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM videos WHERE id = ?", (video_id,)).fetchone()
        return _video_from_row(row) if row else None

    def delete_video(self, video_id: str) -> None:
        """The video and its jobs' history; its events stay until they are pruned."""
        with self._transaction():
            ids = [(r[0],) for r in self._db.execute("SELECT id FROM jobs WHERE video_id = ?", (video_id,))]
            self._db.executemany("DELETE FROM attempts WHERE job_id = ?", ids)
            self._db.execute("DELETE FROM jobs WHERE video_id = ?", (video_id,))
            self._db.execute("DELETE FROM videos WHERE id = ?", (video_id,))

    def list_videos(self, owner: str | None = None) -> list[dict[str, Any]]:
        if owner is None:
            rows = self._db.execute("SELECT * FROM videos ORDER BY created_at")
        else:
            rows = self._db.execute("SELECT * FROM videos WHERE owner = ? ORDER BY created_at", (owner,))
        return [_video_from_row(r) for r in rows]

    # helpers

    def _insert_events(self, events: Iterable[Event]) -> None:
        self._db.executemany(
            "INSERT INTO events (seq, event, ts, data) VALUES (?, ?, ?, ?)",
            [(e.seq, e.event, e.ts, json.dumps(e.data)) for e in events],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


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


def _job_from_row(row: sqlite3.Row) -> Job:
    values = {column: row[column] for column in _JOB_COLUMNS}
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column]) if values[column] is not None else None
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
