"""JobEngine with a real JobStore (SQLite in tmp_path) and a real EventBus (zmq PUB on inproc://).

The store's events table is the source of truth for what the engine emitted; one test
also checks the frames a SUB socket receives. Retries use loop.call_later, so tests that
fail jobs or recover delayed ones run inside asyncio.run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cluster.protocol import Event, JobState, Priority
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.jobs import Job, JobIdFactory
from primary.retry import RetryPolicy, RetryTracker
from primary.store import JobStore

FAST = RetryPolicy(initial_ms=10)
PARAMS = {"width": 640, "height": 360}


class Primary:
    """One run of the primary's core on a data file: store, bus and engine."""

    def __init__(self, ctx: zmq.Context, path: Path, policy: RetryPolicy) -> None:
        self.store = JobStore(path)
        self.endpoint = f"inproc://events-{uuid.uuid4().hex}"
        self.bus = EventBus(ctx, self.endpoint, self.store.last_seq())
        self.engine = JobEngine(self.store, self.bus, RetryTracker(policy))

    def submit(self, video_id: str = "v1", params: dict[str, Any] | None = None, *,
               priority: Priority = Priority.NORMAL, max_retries: int = 3) -> tuple[Job, bool]:
        tracker = self.engine.retries
        tracker.per_type["resize"] = dataclasses.replace(tracker.default, max_retries=max_retries)
        return self.engine.submit("resize", video_id, dict(params or PARAMS), priority=priority, timeout_s=60.0)

    def start_next(self, executor: str = "executor-1") -> tuple[Job, str]:
        job = self.engine.next_job()
        assert job is not None
        return job, self.engine.start(job, executor)

    def events(self, job_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(e.event, e.data) for e in self.store.events_since(0) if job_id in (None, e.data.get("jobId"))]

    def names(self, job_id: str | None = None) -> list[str]:
        return [name for name, _ in self.events(job_id)]

    def close(self) -> None:
        self.engine.close()
        self.bus.close()
        self.store.close()


OpenPrimary = Callable[..., Primary]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture
def open_primary(ctx: zmq.Context, tmp_path: Path) -> Iterator[OpenPrimary]:
    """Opens the primary on the same store file each time (a restart, once the previous one is closed)."""
    opened: list[Primary] = []

    def open_(policy: RetryPolicy = FAST) -> Primary:
        primary = Primary(ctx, tmp_path / "jobs.db", policy)
        opened.append(primary)
        return primary

    yield open_
    for primary in opened:
        primary.close()


async def _until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


# submit


def test_submit_queues_and_emits_queued_with_position(open_primary: OpenPrimary) -> None:
    p = open_primary()
    first, created = p.submit("v1")
    second, _ = p.submit("v2")
    urgent, _ = p.submit("v3", priority=Priority.HIGH)
    assert created is True
    assert first.state is JobState.QUEUED and first.id.startswith("resize-v1-")
    positions = [data["queuePosition"] for name, data in p.events() if name == "job:queued"]
    assert positions == [1, 2, 1]
    assert p.events(second.id) == [("job:queued", {"jobId": second.id, "type": "resize", "videoId": "v2",
                                                   "userId": "", "queuePosition": 2, "queuedAt": second.queued_at,
                                                   "attempt": 0, "priority": "normal"})]
    assert p.store.get_job(urgent.id) == urgent
    assert p.engine.next_job() is urgent


def test_identical_submit_returns_the_same_job(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit("v1", {"width": 640, "height": 360})
    again, created = p.submit("v1", {"height": 360, "width": 640})  # key order does not matter
    assert again is job and created is False
    assert p.names() == ["job:queued"]
    other, created = p.submit("v1", {"width": 320, "height": 180})
    assert created is True and other.id != job.id


def test_identical_submit_while_running_or_delayed_returns_the_job(open_primary: OpenPrimary) -> None:
    async def main() -> None:
        p = open_primary(RetryPolicy(initial_ms=60_000))
        job, _ = p.submit()
        _, run = p.start_next()
        assert p.submit() == (job, False)
        p.engine.fail(run, "boom", permanent=False)
        assert job.state is JobState.DELAYED
        assert p.submit() == (job, False)

    asyncio.run(main())


def test_submit_after_the_job_finished_makes_a_new_job(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit()
    _, run = p.start_next()
    p.engine.complete(run, {"path": "out.mp4"})
    again, created = p.submit()
    assert created is True and again.id != job.id and again.state is JobState.QUEUED


# start, progress, complete


def test_start_emits_started_and_counts_the_attempt(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit()
    started, run = p.start_next("executor-7")
    assert started is job
    assert job.state is JobState.RUNNING and job.attempts == 1 and job.run_id == run and job.executor == "executor-7"
    assert p.engine.job_for_run(run) is job
    name, data = p.events(job.id)[-1]
    assert name == "job:started"
    assert data["attempt"] == 0 and data["startedAt"] == job.started_at and data["queuedAt"] == job.queued_at
    assert p.store.get_job(job.id) == job
    assert p.engine.next_job() is None


def test_progress_only_increases(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit()
    _, run = p.start_next()
    for percent in (10.0, 5.0, 10.0, 30.5, 0.0, 99.0):
        p.engine.progress(run, percent, 1.5, 12.0)
    progress = [data for name, data in p.events(job.id) if name == "job:progress"]
    assert [d["progress"] for d in progress] == [10.0, 30.5, 99.0]
    assert progress[0]["speed"] == 1.5 and progress[0]["etaSeconds"] == 12.0
    assert job.progress == 99.0 and p.store.get_job(job.id).progress == 99.0


def test_complete_emits_completed_with_duration_and_attempts(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit()
    _, run = p.start_next()
    time.sleep(0.02)
    p.engine.complete(run, {"path": "/out/v1-640x360.mp4"})
    name, data = p.events(job.id)[-1]
    assert name == "job:completed"
    assert data["result"] == {"path": "/out/v1-640x360.mp4"}
    assert data["attempts"] == 1
    assert data["duration"] == round(job.completed_at - job.started_at) and data["duration"] >= 20
    assert job.state is JobState.COMPLETED and job.progress == 100.0
    assert job.id not in p.engine.active
    assert p.store.get_job(job.id) == job


# failures and retries


def test_failed_attempt_is_retried_after_the_delay(open_primary: OpenPrimary) -> None:
    async def main() -> None:
        p = open_primary()
        job, _ = p.submit()
        _, run = p.start_next()
        p.engine.fail(run, "ffmpeg exited 1", permanent=False)
        assert job.state is JobState.DELAYED and job.id not in p.engine.queue
        name, failed = p.events(job.id)[-1]
        assert name == "job:failed"
        assert failed["currentAttempt"] == 0 and failed["maxRetries"] == 3 and failed["retryInMs"] == 10
        assert failed["error"] == "ffmpeg exited 1"
        assert job.retry_at == pytest.approx(failed["failedAt"] + 10)
        assert p.store.get_job(job.id).state is JobState.DELAYED

        await _until(lambda: job.state is JobState.QUEUED)
        assert p.names(job.id) == ["job:queued", "job:started", "job:failed", "job:queued"]
        requeued = p.store.events_since(0)[-1]
        assert requeued.ts >= failed["failedAt"] + 9  # not before the delay (1 ms clock slack)
        assert requeued.data["attempt"] == 1
        assert job.retry_at is None and p.store.get_job(job.id).state is JobState.QUEUED
        assert p.engine.next_job() is job

    asyncio.run(main())


def test_four_failed_attempts_end_in_permanent_failure(open_primary: OpenPrimary) -> None:
    async def main() -> None:
        p = open_primary()
        job, _ = p.submit()
        for _ in range(4):
            await _until(lambda: job.id in p.engine.queue)
            _, run = p.start_next()
            p.engine.fail(run, "ffmpeg exited 1", permanent=False)
        failed = [data for name, data in p.events(job.id) if name == "job:failed"]
        assert [d["currentAttempt"] for d in failed] == [0, 1, 2]
        assert [d["retryInMs"] for d in failed] == [10, 20, 40]
        assert p.names(job.id)[-2:] == ["job:started", "job:permanent-failure"]
        assert p.events(job.id)[-1][1]["totalAttempts"] == 4
        assert job.state is JobState.DEAD and job.attempts == 4
        assert job.id not in p.engine.active and job.id not in p.engine.queue
        assert p.store.get_job(job.id).state is JobState.DEAD

    asyncio.run(main())


@pytest.mark.parametrize(("permanent", "max_retries"), [(True, 3), (False, 0)])
def test_failure_without_retry_is_final_at_once(open_primary: OpenPrimary, permanent: bool, max_retries: int) -> None:
    p = open_primary()
    job, _ = p.submit(max_retries=max_retries)
    _, run = p.start_next()
    p.engine.fail(run, "unsupported codec", permanent=permanent)  # no retry: no timer, no loop needed
    assert p.names(job.id) == ["job:queued", "job:started", "job:permanent-failure"]
    assert p.events(job.id)[-1][1] == {"jobId": job.id, "type": "resize", "videoId": "v1", "userId": "",
                                       "totalAttempts": 1, "error": "unsupported codec"}
    assert job.state is JobState.DEAD and job.id not in p.engine.active
    assert p.store.get_job(job.id).error == "unsupported codec"


# lost runs and late reports


def test_run_lost_requeues_without_counting_the_attempt(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit("v1")
    p.submit("v2")
    _, run = p.start_next()
    p.engine.run_lost(run, "executor lost: no heartbeat")
    assert p.names(job.id) == ["job:queued", "job:started", "job:stalled", "job:queued"]
    (_, stalled), (_, queued) = p.events(job.id)[-2:]
    assert stalled["reason"] == "executor lost: no heartbeat" and stalled["attempt"] == 0
    assert queued["attempt"] == 0 and queued["queuePosition"] == 2  # behind v2
    assert job.state is JobState.QUEUED and job.attempts == 0 and job.run_id is None
    assert p.store.get_job(job.id).attempts == 0
    assert p.engine.job_for_run(run) is None


def test_late_reports_for_an_old_run_change_nothing(open_primary: OpenPrimary) -> None:
    p = open_primary()
    job, _ = p.submit()
    _, old_run = p.start_next()
    p.engine.run_lost(old_run, "executor lost")
    _, new_run = p.start_next("executor-2")
    last_seq = p.store.last_seq()
    before = p.store.get_job(job.id)

    for run in (old_run, "no-such-run"):
        p.engine.progress(run, 50.0, None, None)
        p.engine.complete(run, {"path": "stale"})
        p.engine.fail(run, "stale", permanent=True)
        p.engine.run_lost(run, "stale")
    assert p.store.last_seq() == last_seq
    assert p.store.get_job(job.id) == before
    assert job.state is JobState.RUNNING and job.run_id == new_run and job.attempts == 1

    p.engine.complete(new_run, {"path": "out.mp4"})
    p.engine.complete(new_run, {"path": "twice"})  # a duplicate report is late too
    assert p.names(job.id)[-1] == "job:completed" and p.names(job.id).count("job:completed") == 1
    assert job.result == {"path": "out.mp4"}


# restart


def test_recover_restores_queued_running_and_delayed_jobs(open_primary: OpenPrimary) -> None:
    async def main() -> None:
        first = open_primary(RetryPolicy(initial_ms=500))
        a, b, _c, d, e = (first.submit(video)[0] for video in "abcde")
        first.start_next()  # a: running when the primary stops
        _, run_b = first.start_next()
        first.engine.fail(run_b, "boom", permanent=False)  # b: delayed for 500 ms
        _, run_c = first.start_next()
        first.engine.complete(run_c, {})  # c: done; d, e: queued
        first.close()

        second = open_primary(RetryPolicy(initial_ms=500))
        seq_before = second.store.last_seq()
        engine = second.engine
        engine.recover()
        assert set(engine.active) == {a.id, b.id, d.id, e.id}
        assert engine.queue.position(d.id) < engine.queue.position(e.id)
        assert len(engine.queue) == 3
        running = engine.active[a.id]
        assert running.state is JobState.QUEUED and running.attempts == 0 and running.run_id is None
        assert [(ev.event, ev.data["jobId"]) for ev in second.store.events_since(seq_before)] == [("job:queued", a.id)]

        delayed = engine.active[b.id]
        assert delayed.state is JobState.DELAYED and b.id not in engine.queue  # waits on after the restart
        retry_at = delayed.retry_at
        await _until(lambda: delayed.state is JobState.QUEUED)
        assert delayed.queued_at >= retry_at - 1  # not before its retry time (1 ms clock slack)
        assert b.id in engine.queue and delayed.attempts == 1
        assert second.submit("d") == (engine.active[d.id], False)  # dedupe survives the restart

    asyncio.run(main())


def test_recover_retries_a_delayed_job_left_by_the_previous_run(open_primary: OpenPrimary) -> None:
    async def main() -> None:
        first = open_primary()
        job, _ = first.submit()
        _, run = first.start_next()
        first.engine.fail(run, "boom", permanent=False)  # retry due in 10 ms
        first.close()  # cancels the timer: the retry is left to the next run

        second = open_primary()
        second.engine.recover()
        await _until(lambda: job.id in second.engine.queue)
        assert second.engine.next_job().attempts == 1
        assert second.names(job.id)[-2:] == ["job:failed", "job:queued"]

    asyncio.run(main())


def test_late_progress_for_a_run_interrupted_by_a_restart_changes_nothing(open_primary: OpenPrimary) -> None:
    first = open_primary()
    job, _ = first.submit()
    _, old_run = first.start_next()
    first.engine.progress(old_run, 40.0, None, None)
    first.close()

    second = open_primary()
    second.engine.recover()
    second.start_next()
    last_seq = second.store.last_seq()
    second.engine.progress(old_run, 90.0, None, None)
    assert second.store.last_seq() == last_seq  # fails: a job:progress event for the new run, at 90 %
    assert second.engine.active[job.id].progress == 0.0
    assert second.engine.job_for_run(old_run) is None


def test_queue_order_is_the_same_after_each_restart(open_primary: OpenPrimary) -> None:
    first = open_primary()
    for video in "abc":
        first.submit(video)
    first.start_next()  # a is running
    first.close()

    orders = []
    for _ in range(2):
        primary = open_primary()
        primary.engine.recover()
        orders.append(sorted(primary.engine.active, key=primary.engine.queue.position))
        primary.close()
    assert orders[0] == orders[1]


def test_users_turns_are_the_same_after_a_restart(open_primary: OpenPrimary) -> None:
    """A and B have had a start since C joined: C goes first after the restart too, then A, then B (whose
    running job comes back at the head of B's jobs)."""
    first = open_primary()
    for owner, video in [("A", "a1"), ("A", "a2"), ("A", "a3"), ("B", "b1"), ("B", "b2"), ("C", "c1")]:
        first.engine.submit("resize", video, dict(PARAMS), priority=Priority.NORMAL, owner=owner)
    _, run = first.start_next()
    first.engine.complete(run, {})
    first.start_next()  # b1 running when the primary stops
    before = sorted((j for j in first.engine.active if j in first.engine.queue), key=first.engine.queue.position)
    assert [first.engine.active[j].video_id for j in before] == ["c1", "a2", "b2", "a3"]
    first.close()

    second = open_primary()
    second.engine.recover()
    after = sorted(second.engine.active, key=second.engine.queue.position)
    assert [second.engine.active[j].video_id for j in after] == ["c1", "a2", "b1", "a3", "b2"]
    assert [second.engine.next_job().video_id for _ in after] == ["c1", "a2", "b1", "a3", "b2"]


# sequence numbers and publishing


def test_seq_grows_by_one_per_event_and_continues_after_reopen(open_primary: OpenPrimary) -> None:
    first = open_primary()
    first.submit("v1")
    _, run = first.start_next()
    first.engine.progress(run, 50.0, None, None)
    first.engine.complete(run, {})
    first.submit("v2")
    assert [e.seq for e in first.store.events_since(0)] == [1, 2, 3, 4, 5]
    assert first.bus.last_seq == 5
    first.close()

    second = open_primary()
    assert second.bus.last_seq == 5
    second.engine.recover()
    second.submit("v3")
    assert [e.seq for e in second.store.events_since(0)] == [1, 2, 3, 4, 5, 6]


def test_events_are_published_as_stored(open_primary: OpenPrimary, ctx: zmq.Context) -> None:
    p = open_primary()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(p.endpoint)
        sub.subscribe(b"")
        deadline = time.monotonic() + 5
        while not sub.poll(10):  # the subscription is live once a probe gets through
            assert time.monotonic() < deadline, "SUB never received a probe"
            p.bus.publish(Event("probe", 0, 0.0, {}))

        p.submit()
        p.start_next()
        received = []
        while len(received) < 2:
            assert sub.poll(5000), "no event published"
            frames = sub.recv_multipart()
            if frames[0] != b"probe":
                received.append(frames)
        assert [frames[0] for frames in received] == [b"job:queued", b"job:started"]
        assert [Event.decode(frames) for frames in received] == p.store.events_since(0)
    finally:
        sub.close()


# job ids


def test_job_ids_are_unique_within_one_millisecond() -> None:
    ids = JobIdFactory()
    made = [ids.make("resize", "v1") for _ in range(1000)]
    assert len(set(made)) == 1000
    stamps = [int(job_id.rsplit("-", 1)[1]) for job_id in made]
    assert stamps == sorted(stamps)


def test_job_ids_stay_ahead_of_ids_observed_from_an_earlier_run() -> None:
    ids = JobIdFactory()
    future_ms = int(time.time() * 1000) + 60_000
    ids.observe(f"convert-abc-{future_ms}")
    ids.observe("not-a-timestamp-x")
    assert ids.make("resize", "v1") == f"resize-v1-{future_ms + 1}"


def test_engine_ids_differ_for_jobs_submitted_in_the_same_millisecond(open_primary: OpenPrimary) -> None:
    p = open_primary()
    jobs = [p.submit("v1", {"width": 2 * n, "height": 2})[0] for n in range(1, 51)]
    assert len({job.id for job in jobs}) == 50
