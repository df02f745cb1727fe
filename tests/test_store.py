"""JobStore against real SQLite files in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.protocol import Event, JobState, Priority
from primary.jobs import Job
from primary.store import JobStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.db"  # the store creates missing parent directories


@pytest.fixture
def store(db_path: Path) -> Iterator[JobStore]:
    store = JobStore(db_path)
    yield store
    store.close()


def _job(job_id: str, **fields: Any) -> Job:
    values: dict[str, Any] = {"type": "resize", "video_id": "v1", "params": {"width": 640, "height": 360}}
    values.update(fields)
    return Job(id=job_id, **values)


def _event(seq: int, name: str = "job:queued", **data: Any) -> Event:
    return Event(name, seq, 1000.0 + seq, data)


def _full_job() -> Job:
    return Job(
        id="convert-v9-1700000000123", type="convert", video_id="v9", params={"format": "webm", "extra": [1, {"a": None}]},
        owner="alice", state=JobState.DEAD, priority=Priority.HIGH, attempts=4, max_retries=3, timeout_s=90.5,
        progress=37.25, result={"path": "/out/v9.webm", "sizes": [1, 2]}, error="ffmpeg exited 1",
        created_at=1.125, queued_at=2.25, started_at=3.5, completed_at=4.0, failed_at=5.75, cancelled_at=6.0,
        retry_at=7.5, queue_order=12, run_id="abc123", executor="executor-2",
    )


# jobs


def test_save_and_get_round_trip_every_field(store: JobStore) -> None:
    job = _full_job()
    store.save(job)
    loaded = store.get_job(job.id)
    assert loaded == job
    assert loaded is not job
    assert loaded.state is JobState.DEAD and loaded.priority is Priority.HIGH


def test_round_trip_of_defaults_keeps_none_result(store: JobStore) -> None:
    job = _job("j1", params={})
    store.save(job)
    loaded = store.get_job("j1")
    assert loaded == job
    assert loaded.result is None and loaded.params == {} and loaded.run_id is None


def test_get_unknown_job_is_none(store: JobStore) -> None:
    assert store.get_job("nope") is None


def test_save_again_replaces_the_row(store: JobStore) -> None:
    job = _job("j1")
    store.save(job)
    job.state, job.progress, job.result = JobState.COMPLETED, 100.0, {"ok": True}
    store.save(job)
    assert store.get_job("j1") == job
    assert store.count_by_state() == {"completed": 1}


@pytest.fixture
def listed(store: JobStore) -> JobStore:
    rows = [
        ("r1", "resize", "v1", JobState.COMPLETED, 1.0),
        ("r2", "resize", "v2", JobState.QUEUED, 4.0),
        ("c1", "convert", "v1", JobState.QUEUED, 2.0),
        ("c2", "convert", "v1", JobState.RUNNING, 5.0),
        ("r3", "resize", "v1", JobState.QUEUED, 3.0),
    ]
    for job_id, job_type, video_id, state, created in rows:
        store.save(_job(job_id, type=job_type, video_id=video_id, state=state, created_at=created))
    return store


@pytest.mark.parametrize(("filters", "ids"), [
    ({}, ["c2", "r2", "r3", "c1", "r1"]),  # newest first
    ({"state": "queued"}, ["r2", "r3", "c1"]),
    ({"video_id": "v1"}, ["c2", "r3", "c1", "r1"]),
    ({"job_type": "resize"}, ["r2", "r3", "r1"]),
    ({"state": "queued", "video_id": "v1", "job_type": "resize"}, ["r3"]),
    ({"state": "dead"}, []),
    ({"video_id": "v3"}, []),
    ({"limit": 2}, ["c2", "r2"]),
    ({"video_id": "v1", "limit": 1}, ["c2"]),
    ({"state": None, "video_id": "", "job_type": None}, ["c2", "r2", "r3", "c1", "r1"]),  # empty filters are ignored
])
def test_list_jobs_filters_and_orders_newest_first(listed: JobStore, filters: dict[str, Any], ids: list[str]) -> None:
    assert [job.id for job in listed.list_jobs(**filters)] == ids


def test_unfinished_jobs_are_queued_running_delayed_in_queue_order(store: JobStore) -> None:
    states = [
        ("a", JobState.RUNNING, 4), ("b", JobState.COMPLETED, 1), ("c", JobState.QUEUED, 2),
        ("d", JobState.DELAYED, 7), ("e", JobState.DEAD, 3), ("f", JobState.QUEUED, 1),
        ("g", JobState.CANCELLED, 5), ("h", JobState.QUEUED, 6),
    ]
    for job_id, state, order in states:
        store.save(_job(job_id, state=state, queue_order=order, created_at=float(10 - order)))
    unfinished = store.unfinished_jobs()
    assert [job.id for job in unfinished] == ["f", "c", "a", "h", "d"]
    assert store.max_queue_order() == 7


def test_empty_store(store: JobStore) -> None:
    assert store.unfinished_jobs() == []
    assert store.list_jobs() == []
    assert store.count_by_state() == {}
    assert store.max_queue_order() == 0
    assert store.last_seq() == 0
    assert store.events_since(0) == []
    assert store.list_videos() == []


def test_count_by_state(listed: JobStore) -> None:
    assert listed.count_by_state() == {"completed": 1, "queued": 3, "running": 1}


# events


def test_append_events_and_events_since(store: JobStore) -> None:
    events = [_event(seq, jobId=f"j{seq}", n=seq) for seq in range(1, 6)]
    store.append_events(events)
    assert store.events_since(0) == events
    assert store.events_since(3) == events[3:]  # strictly after the given seq
    assert store.events_since(5) == []
    assert store.events_since(1, limit=2) == events[1:3]
    assert store.last_seq() == 5


@pytest.mark.parametrize(("keep", "deleted", "left"), [
    (3, 7, [8, 9, 10]),
    (1, 9, [10]),
    (10, 0, list(range(1, 11))),
    (50, 0, list(range(1, 11))),
])
def test_prune_events_keeps_the_newest(store: JobStore, keep: int, deleted: int, left: list[int]) -> None:
    store.append_events([_event(seq) for seq in range(1, 11)])
    assert store.prune_events(keep) == deleted
    assert [e.seq for e in store.events_since(0)] == left
    assert store.last_seq() == 10  # the sequence carries on from the newest event


def test_prune_events_on_empty_table(store: JobStore) -> None:
    assert store.prune_events(5) == 0
    assert store.last_seq() == 0


def test_save_writes_job_and_events_together(store: JobStore) -> None:
    job = _job("j1")
    store.save(job, [_event(1, jobId="j1"), _event(2, "job:started", jobId="j1")])
    assert store.get_job("j1") == job
    assert [(e.seq, e.event, e.data) for e in store.events_since(0)] == [
        (1, "job:queued", {"jobId": "j1"}), (2, "job:started", {"jobId": "j1"}),
    ]


def test_save_is_atomic_for_a_new_job(store: JobStore) -> None:
    store.append_events([_event(1)])
    with pytest.raises(sqlite3.IntegrityError):
        store.save(_job("j1"), [_event(2), _event(1)])  # seq 1 exists: the whole transaction rolls back
    assert store.get_job("j1") is None
    assert [e.seq for e in store.events_since(0)] == [1]


def test_save_is_atomic_for_an_existing_job(store: JobStore) -> None:
    job = _job("j1")
    store.save(job, [_event(1)])
    changed = _job("j1", state=JobState.RUNNING, attempts=1)
    with pytest.raises(sqlite3.IntegrityError):
        store.save(changed, [_event(1, "job:started")])
    assert store.get_job("j1") == job
    store.save(changed, [_event(2, "job:started")])  # the store is still usable after the rollback
    assert store.get_job("j1") == changed


def test_append_events_is_atomic(store: JobStore) -> None:
    store.append_events([_event(3)])
    with pytest.raises(sqlite3.IntegrityError):
        store.append_events([_event(1), _event(2), _event(3)])
    assert [e.seq for e in store.events_since(0)] == [3]


# videos


def test_videos_add_get_list(store: JobStore) -> None:
    info = {"format": "mp4", "width": 1920, "height": 1080, "durationS": 2.5}
    store.add_video("v2", "bob", "b.mov", {"format": "mov"}, 200.0)
    store.add_video("v1", "alice", "a.mp4", info, 100.0)
    store.add_video("v3", "alice", "c.mkv", {"format": "mkv"}, 300.0)
    assert store.get_video("v1") == {"videoId": "v1", "owner": "alice", "name": "a.mp4", "info": info,
                                     "createdAt": 100.0}
    assert store.get_video("nope") is None
    assert [v["videoId"] for v in store.list_videos()] == ["v1", "v2", "v3"]  # oldest first
    assert [v["videoId"] for v in store.list_videos("alice")] == ["v1", "v3"]
    assert store.list_videos("carol") == []


def test_adding_a_video_twice_fails_and_keeps_the_first(store: JobStore) -> None:
    store.add_video("v1", "", "a.mp4", {"format": "mp4"}, 1.0)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_video("v1", "", "other.avi", {"format": "avi"}, 2.0)
    assert store.get_video("v1")["name"] == "a.mp4"


# persistence


def test_data_survives_close_and_reopen(db_path: Path) -> None:
    store = JobStore(db_path)
    job = _full_job()
    store.save(job, [_event(1, jobId=job.id), _event(2, jobId=job.id)])
    store.add_video("v9", "alice", "a.mp4", {"format": "mp4"}, 5.0)
    store.close()

    reopened = JobStore(db_path)
    try:
        assert reopened.get_job(job.id) == job
        assert reopened.last_seq() == 2
        assert [e.seq for e in reopened.events_since(0)] == [1, 2]
        assert reopened.get_video("v9")["owner"] == "alice"
        assert reopened.max_queue_order() == 12
    finally:
        reopened.close()
