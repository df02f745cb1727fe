"""The job store's schema, as an ordered list of migrations applied in place when the store opens.

The version lives in the ``settings`` table (``schema_version``), not in ``PRAGMA user_version``: the
account store keeps its own tables in the same file and may version them on its own. Version 1 is the
schema before versions existed (every statement ``IF NOT EXISTS``), so a store written then opens as one
at version 1 and takes the later steps. A migration is appended, never edited.
"""

from __future__ import annotations

import sqlite3

VERSION_SETTING = "schema_version"

_V1_BASE = """
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

# Every list order and filter gets an index ending in (created_at, id), the order pages are cut in.
_V2_INDEXES = """
DROP INDEX IF EXISTS jobs_state;
DROP INDEX IF EXISTS jobs_video;
CREATE INDEX jobs_created ON jobs(created_at, id);
CREATE INDEX jobs_state_created ON jobs(state, created_at, id);
CREATE INDEX jobs_owner_created ON jobs(owner, created_at, id);
CREATE INDEX jobs_owner_state_created ON jobs(owner, state, created_at, id);
CREATE INDEX jobs_type_created ON jobs(type, created_at, id);
CREATE INDEX jobs_video_created ON jobs(video_id, created_at, id);
CREATE INDEX jobs_queue_order ON jobs(queue_order);
CREATE INDEX jobs_ended ON jobs(COALESCE(completed_at, CASE WHEN state = 'dead' THEN failed_at END, cancelled_at))
    WHERE state IN ('completed', 'dead', 'cancelled');
CREATE INDEX attempts_started ON attempts(started_at);
CREATE INDEX videos_created ON videos(created_at, id);
CREATE INDEX videos_owner_created ON videos(owner, created_at, id);
"""

# Each event carries the user whose job it is ('' for cluster notices), so a resume reads only those.
_V3_EVENT_OWNERS = """
ALTER TABLE events ADD COLUMN owner TEXT NOT NULL DEFAULT '';
UPDATE events SET owner = COALESCE(json_extract(data, '$.userId'), '') WHERE json_extract(data, '$.jobId') IS NOT NULL;
CREATE INDEX events_owner_seq ON events(owner, seq);
CREATE INDEX events_ts ON events(ts);
"""

# Jobs counted by state and type, kept by triggers in the writing transaction (so exact whatever writes).
_V4_JOB_COUNTS = """
CREATE TABLE job_counts (
    state TEXT NOT NULL,
    type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (state, type)
) WITHOUT ROWID;
INSERT INTO job_counts (state, type, n) SELECT state, type, COUNT(*) FROM jobs GROUP BY state, type;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, type, n) VALUES (NEW.state, NEW.type, 1)
        ON CONFLICT (state, type) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state AND type = OLD.type;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF state, type ON jobs
        WHEN OLD.state IS NOT NEW.state OR OLD.type IS NOT NEW.type BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state AND type = OLD.type;
    INSERT INTO job_counts (state, type, n) VALUES (NEW.state, NEW.type, 1)
        ON CONFLICT (state, type) DO UPDATE SET n = n + 1;
END;
"""

# The newest job of each output of a video (a resize size, a conversion format, the audio, the ladder):
# the video list shows these without reading the video's whole history.
_OUTPUT_KEY = ("CASE NEW.type WHEN 'resize' THEN 'resize:' || IFNULL(json_extract(NEW.params, '$.width'), '') || 'x' "
               "|| IFNULL(json_extract(NEW.params, '$.height'), '') WHEN 'convert' THEN 'convert:' "
               "|| IFNULL(json_extract(NEW.params, '$.format'), '') ELSE NEW.type END")
_V5_VIDEO_OUTPUTS = f"""
CREATE TABLE video_outputs (
    video_id TEXT NOT NULL,
    output TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (video_id, output)
) WITHOUT ROWID;
CREATE TRIGGER jobs_output_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO video_outputs (video_id, output, job_id) VALUES (NEW.video_id, {_OUTPUT_KEY}, NEW.id)
        ON CONFLICT (video_id, output) DO UPDATE SET job_id = excluded.job_id;
END;
CREATE TRIGGER jobs_output_delete AFTER DELETE ON jobs BEGIN
    DELETE FROM video_outputs WHERE video_id = OLD.video_id AND job_id = OLD.id;
END;
INSERT INTO video_outputs (video_id, output, job_id)
    SELECT video_id, {_OUTPUT_KEY.replace("NEW.", "")}, id FROM jobs WHERE true ORDER BY created_at, id
    ON CONFLICT (video_id, output) DO UPDATE SET job_id = excluded.job_id;
"""

# Each user's latest start per priority level: after a restart the queue gives users their turns in the
# same order as before (the user who has waited longest for a start goes first).
_V6_USER_STARTS = """
CREATE INDEX jobs_owner_priority_started ON jobs(owner, priority, started_at);
"""

# Pipelines (primary/pipeline_store.py): a row per pipeline, a row per stage; written in the engine's
# transactions, so a stage's job and the pipeline's step are stored together.
_V7_PIPELINES = """
CREATE TABLE pipelines (
    id TEXT PRIMARY KEY,
    video_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    current INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX pipelines_created ON pipelines(created_at, id);
CREATE INDEX pipelines_owner_created ON pipelines(owner, created_at, id);
CREATE INDEX pipelines_video_created ON pipelines(video_id, created_at, id);
CREATE INDEX pipelines_unfinished ON pipelines(state) WHERE state IN ('running', 'review', 'failed');
CREATE TABLE pipeline_stages (
    pipeline_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    type TEXT NOT NULL,
    params TEXT NOT NULL,
    options TEXT NOT NULL,
    review INTEGER NOT NULL,
    job_id TEXT,
    state TEXT NOT NULL,
    PRIMARY KEY (pipeline_id, idx)
) WITHOUT ROWID;
"""

# Pipeline retention (primary/pipeline_retention.py): the finished pipelines of a state, oldest change first.
_V8_PIPELINES_ENDED = """
CREATE INDEX pipelines_state_updated ON pipelines(state, updated_at);
"""

MIGRATIONS: tuple[str, ...] = (_V1_BASE, _V2_INDEXES, _V3_EVENT_OWNERS, _V4_JOB_COUNTS, _V5_VIDEO_OUTPUTS,
                               _V6_USER_STARTS, _V7_PIPELINES, _V8_PIPELINES_ENDED)
LATEST = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'settings'").fetchone()
    if not exists:
        return 0
    row = db.execute("SELECT value FROM settings WHERE name = ?", (VERSION_SETTING,)).fetchone()
    if row:
        return int(row[0])
    jobs = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
    return 1 if jobs else 0  # written before versions existed


def migrate(db: sqlite3.Connection) -> int:
    """Apply the missing steps in order, each in its own transaction; answer the version now."""
    version = schema_version(db)
    if version > LATEST:
        raise RuntimeError(f"the store is at schema {version}, newer than this program's {LATEST}")
    for number in range(version + 1, LATEST + 1):
        _apply(db, number, MIGRATIONS[number - 1])
    return LATEST


def _apply(db: sqlite3.Connection, number: int, script: str) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(script):
            db.execute(statement)
        db.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (VERSION_SETTING, str(number)))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split on the ends of statements (sqlite3.complete_statement), keeping trigger bodies whole."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]
