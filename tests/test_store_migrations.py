"""A cluster.db written before schema versions existed opens with today's JobStore and migrates in place."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from primary.migrations import LATEST, schema_version
from primary.store import JobStore

# The schema as the store wrote it before migrations (copied, not imported: it must not follow the code).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, video_id TEXT NOT NULL, params TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, priority TEXT NOT NULL, attempts INTEGER NOT NULL,
    max_retries INTEGER NOT NULL, timeout_s REAL NOT NULL, progress REAL NOT NULL, result TEXT, error TEXT,
    created_at REAL, queued_at REAL, started_at REAL, completed_at REAL, failed_at REAL, cancelled_at REAL,
    retry_at REAL, queue_order INTEGER NOT NULL, run_id TEXT, executor TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_video ON jobs(video_id);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL, number INTEGER NOT NULL, executor TEXT, queued_at REAL, started_at REAL NOT NULL,
    ended_at REAL, outcome TEXT, error TEXT, command TEXT, stderr TEXT, PRIMARY KEY (job_id, number)
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL DEFAULT '', name TEXT NOT NULL, info TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
"""

JOBS = [  # id, type, video, params, owner, state, created
    ("resize-v1-1", "resize", "v1", {"width": 320, "height": 240}, "alice", "completed", 1.0),
    ("resize-v1-2", "resize", "v1", {"width": 320, "height": 240}, "alice", "queued", 2.0),
    ("convert-v1-3", "convert", "v1", {"format": "webm"}, "alice", "dead", 3.0),
    ("extract-audio-v2-4", "extract-audio", "v2", {}, "bob", "running", 4.0),
]


def _write_old_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    for order, (job_id, job_type, video, params, owner, state, created) in enumerate(JOBS, 1):
        db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,'normal',1,3,60.0,0.0,NULL,NULL,?,?,NULL,?,NULL,NULL,"
                   "NULL,?,NULL,NULL)", (job_id, job_type, video, json.dumps(params), owner, state, created,
                                         created, created + 10 if state == "completed" else None, order))
    db.execute("INSERT INTO attempts VALUES ('convert-v1-3', 1, 'executor-1', 3.0, 3.5, 4.0, 'failed', 'boom', "
               "'ffmpeg ...', 'tail')")
    events = [(1, "job:queued", {"jobId": "resize-v1-1", "userId": "alice"}),
              (2, "queue:paused", {"paused": True}),
              (3, "job:queued", {"jobId": "extract-audio-v2-4", "userId": "bob"})]
    db.executemany("INSERT INTO events VALUES (?, ?, 1000.0, ?)", [(s, n, json.dumps(d)) for s, n, d in events])
    db.execute("INSERT INTO videos VALUES ('v1', 'alice', 'a.mp4', '{\"format\": \"mp4\"}', 1.0)")
    db.execute("INSERT INTO videos VALUES ('v2', 'bob', 'b.mp4', '{\"format\": \"mp4\"}', 2.0)")
    db.execute("INSERT INTO settings VALUES ('queue_paused', '1')")
    db.execute("INSERT INTO users VALUES ('u1', 'alice', 'hash', 0, 1.0)")
    db.commit()
    db.close()


@pytest.fixture
def migrated(tmp_path: Path) -> JobStore:
    path = tmp_path / "cluster.db"
    _write_old_store(path)
    store = JobStore(path)
    yield store
    store.close()


def test_an_old_store_keeps_its_data_when_it_migrates(migrated: JobStore) -> None:
    assert migrated.schema_version == LATEST
    assert [job.id for job in migrated.list_jobs()] == [j[0] for j in reversed(JOBS)]
    assert migrated.get_job("convert-v1-3").params == {"format": "webm"}
    assert migrated.attempts("convert-v1-3")[0].stderr == "tail"
    assert [v["videoId"] for v in migrated.list_videos()] == ["v1", "v2"]
    assert migrated.get_setting("queue_paused") == "1"
    assert migrated.last_seq() == 3
    assert [job.id for job in migrated.unfinished_jobs()] == ["resize-v1-2", "extract-audio-v2-4"]
    assert migrated.integrity_problems() == []


def test_the_migration_adds_counts_outputs_event_owners_and_indexes(migrated: JobStore) -> None:
    assert migrated.count_by_state() == {"completed": 1, "queued": 1, "dead": 1, "running": 1}
    assert migrated.count_by_state_and_type() == [("completed", "resize", 1), ("dead", "convert", 1),
                                                  ("queued", "resize", 1), ("running", "extract-audio", 1)]
    outputs = migrated.video_outputs(["v1", "v2"])
    assert sorted(job.id for job in outputs["v1"]) == ["convert-v1-3", "resize-v1-2"], "the newest of each output"
    assert [job.id for job in outputs["v2"]] == ["extract-audio-v2-4"]
    assert [e.seq for e in migrated.events_since(0, owner="bob")] == [2, 3], "bob's events and the notices"
    assert [e.seq for e in migrated.events_since(0, owner="alice")] == [1, 2]
    indexes = {r[0] for r in migrated._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"jobs_created", "jobs_owner_state_created", "events_owner_seq", "videos_owner_created"} <= indexes
    assert "jobs_state" not in indexes, "replaced by the index with the list order"


def test_the_accounts_tables_are_left_alone(migrated: JobStore) -> None:
    assert migrated._db.execute("SELECT name FROM users").fetchall()[0][0] == "alice"


def test_reopening_a_migrated_store_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cluster.db"
    _write_old_store(path)
    JobStore(path).close()
    store = JobStore(path)
    try:
        assert store.schema_version == LATEST
        assert store.count_by_state()["queued"] == 1, "the counts were not filled twice"
    finally:
        store.close()


def test_a_new_store_starts_at_the_latest_version(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "fresh.db")
    try:
        assert schema_version(store._db) == LATEST
    finally:
        store.close()


def test_a_store_from_a_newer_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.db"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE settings SET value = ? WHERE name = 'schema_version'", (str(LATEST + 1),))
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        JobStore(path)
