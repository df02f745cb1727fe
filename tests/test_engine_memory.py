"""What the primary holds in memory per job: a queued job well under 1 KB, a finished one nothing."""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from cluster.protocol import Priority
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.jobs import Job
from primary.retry import RetryPolicy, RetryTracker
from primary.store import JobStore

JOBS = 5000
BUDGET_BYTES = 1024


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[JobStore, EventBus]]:
    ctx = zmq.Context()
    store = JobStore(tmp_path / "cluster.db")
    bus = EventBus(ctx, f"inproc://events-{uuid.uuid4().hex}", store.last_seq())
    yield store, bus
    bus.close()
    store.close()
    ctx.term()


def _held_per_job(make_jobs: object) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = make_jobs()  # type: ignore[operator]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert kept is not None
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / JOBS


def test_a_queued_job_submitted_costs_well_under_a_kilobyte(parts: tuple[JobStore, EventBus]) -> None:
    store, bus = parts
    engine = JobEngine(store, bus, RetryTracker(RetryPolicy()))

    def submit_all() -> JobEngine:
        with engine.batch():
            for n in range(JOBS):
                engine.submit("resize", f"video{n % 300:04d}", {"width": 2 * n + 2, "height": 360},
                              priority=Priority.NORMAL, owner=f"user{n % 40}")
        return engine

    held = _held_per_job(submit_all)
    print(f"held per submitted job: {held:.0f} bytes")
    assert held < BUDGET_BYTES
    assert len(engine.queue) == JOBS


def test_a_queued_job_recovered_from_the_store_costs_well_under_a_kilobyte(parts: tuple[JobStore, EventBus]) -> None:
    store, bus = parts
    store.save_rows(Job(id=f"resize-video{n % 300:04d}-{1_700_000_000_000 + n}", type="resize",
                        video_id=f"video{n % 300:04d}", params={"width": 2 * n + 2, "height": 360},
                        owner=f"user{n % 40}", queue_order=n) for n in range(JOBS))
    engine = JobEngine(store, bus, RetryTracker(RetryPolicy()))

    def recover() -> JobEngine:
        engine.recover()
        return engine

    held = _held_per_job(recover)
    print(f"held per recovered job: {held:.0f} bytes")
    assert held < 0.8 * BUDGET_BYTES
    assert len(engine.queue) == JOBS


def test_finished_jobs_are_not_held(parts: tuple[JobStore, EventBus]) -> None:
    store, bus = parts
    engine = JobEngine(store, bus, RetryTracker(RetryPolicy()))
    for n in range(3):
        engine.submit("resize", "v1", {"width": 2 * n + 2, "height": 2}, priority=Priority.NORMAL, owner="ann")
    first, second, third = (engine.next_job() for _ in range(3))
    engine.complete(engine.start(first, "executor-1"), {})
    engine.fail(engine.start(second, "executor-1"), "bad input", permanent=True)
    engine.cancel(third.id)
    assert engine.active == {} and len(engine.queue) == 0 and engine.running == 0
    assert engine.active_by_owner == {}, "the per-user count of active jobs follows"
    assert engine._attempts == {} and engine._by_key == {} and engine._by_run == {}
    assert store.count_by_state() == {"completed": 1, "dead": 1, "cancelled": 1}
