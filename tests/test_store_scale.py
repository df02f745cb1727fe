"""What keeps the primary fast as the store grows, tested on its parts: cursor pages, owner-scoped events,
retention in small batches, group commit, coroutine control handlers, the hour's statistics, the loop probe."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from cluster.config import ClusterConfig
from cluster.protocol import Event, EventName, JobState, Priority, Reply, Request
from primary import retention
from primary import store as store_module
from primary.control import ControlServer
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.jobs import Job
from primary.metrics import LoopLag
from primary.retention import Keep, Retention, keep_rules
from primary.retry import RetryPolicy, RetryTracker
from primary.stats import WindowStats
from primary.store import CursorError, JobStore, ReadStore, job_cursor
from workers.web.rpc import ControlClient, RpcError

DAY_MS = 86_400_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path / "cluster.db")
    yield store
    store.close()


def _job(n: int, **fields: Any) -> Job:
    values: dict[str, Any] = {"type": "resize", "video_id": "v1", "params": {"width": 2 * n + 2, "height": 2},
                              "owner": "ann", "created_at": float(1000 + n)}
    values.update(fields)
    return Job(id=f"resize-v1-{n:04d}", **values)


# pages


def test_pages_by_cursor_cover_every_job_once_newest_first(store: JobStore) -> None:
    store.save_rows(_job(n, created_at=float(1000 + n // 3)) for n in range(25))  # ties on created_at
    seen, cursor = [], None
    while True:
        page = store.list_jobs(limit=4, before=cursor)
        seen += [job.id for job in page]
        if len(page) < 4:
            break
        cursor = job_cursor(page[-1])
    assert len(seen) == 25 and len(set(seen)) == 25
    assert seen == [job.id for job in store.list_jobs(limit=100)]


def test_a_page_with_filters_continues_within_them(store: JobStore) -> None:
    store.save_rows(_job(n, owner="ann" if n % 2 else "bob", state=JobState.DEAD if n % 3 else JobState.COMPLETED)
                    for n in range(30))
    first = store.list_jobs(owner="ann", state="dead", limit=3)
    rest = store.list_jobs(owner="ann", state="dead", limit=100, before=job_cursor(first[-1]))
    everything = store.list_jobs(owner="ann", state="dead", limit=100)
    assert [j.id for j in first + rest] == [j.id for j in everything]
    assert all(j.owner == "ann" and j.state is JobState.DEAD for j in everything)


@pytest.mark.parametrize("cursor", ["nonsense", "12.5", "~resize-1", "abc~def"])
def test_a_cursor_this_store_did_not_make_is_refused(store: JobStore, cursor: str) -> None:
    with pytest.raises(CursorError):
        store.list_jobs(before=cursor)


def test_videos_page_newest_first_with_the_newest_job_of_each_output(store: JobStore) -> None:
    for n in range(5):
        store.add_video(f"v{n}", "ann", f"{n}.mp4", {"format": "mp4"}, float(n))
    store.save_rows([_job(1, video_id="v1", params={"width": 320, "height": 240}, created_at=1.0),
                     _job(2, video_id="v1", params={"width": 320, "height": 240}, created_at=2.0),
                     _job(3, video_id="v1", type="hls", params={"renditions": [240]}, created_at=3.0)])
    page = store.page_videos("ann", limit=2)
    assert [v["videoId"] for v in page] == ["v4", "v3"]
    assert [v["videoId"] for v in store.page_videos("ann", limit=10, before=f"{3.0!r}~v3")] == ["v2", "v1", "v0"]
    outputs = store.video_outputs(["v1", "v0"])
    assert [job.id for job in outputs["v1"]] == ["resize-v1-0003", "resize-v1-0002"], "one job per output"
    assert outputs["v0"] == []


def test_the_read_only_store_reads_from_another_thread_and_cannot_write(store: JobStore, tmp_path: Path) -> None:
    store.save_rows([_job(1)])
    reads = ReadStore(tmp_path / "cluster.db")
    try:
        assert asyncio.run(asyncio.to_thread(lambda: [j.id for j in reads.list_jobs()])) == ["resize-v1-0001"]
        with pytest.raises(Exception, match="readonly"):
            reads._db.execute("DELETE FROM jobs")
    finally:
        reads.close()


# events


def test_a_users_events_are_read_with_the_clusters_notices_only(store: JobStore) -> None:
    events = [Event("job:queued", 1, 1.0, {"jobId": "a", "userId": "ann"}),
              Event("job:queued", 2, 2.0, {"jobId": "b", "userId": "bob"}),
              Event("queue:paused", 3, 3.0, {"paused": True}),
              Event("job:started", 4, 4.0, {"jobId": "a", "userId": "ann"}),
              Event("job:started", 5, 5.0, {"jobId": "b", "userId": "bob"})]
    store.append_events(events)
    assert [e.seq for e in store.events_since(0, owner="ann")] == [1, 3, 4]
    assert [e.seq for e in store.events_since(1, limit=1, owner="ann")] == [3]
    assert [e.seq for e in store.events_since(0, owner="carol")] == [3]
    assert [e.seq for e in store.events_since(0)] == [1, 2, 3, 4, 5]


# retention


def test_retention_removes_by_age_per_final_state(store: JobStore) -> None:
    now = 100 * DAY_MS
    store.save_rows([
        _job(1, state=JobState.COMPLETED, created_at=now - 9 * DAY_MS, completed_at=now - 8 * DAY_MS),
        _job(2, state=JobState.COMPLETED, created_at=now - 9 * DAY_MS, completed_at=now - 6 * DAY_MS),
        _job(3, state=JobState.DEAD, created_at=now - 40 * DAY_MS, failed_at=now - 31 * DAY_MS),
        _job(4, state=JobState.DEAD, created_at=now - 40 * DAY_MS, failed_at=now - 8 * DAY_MS),
        _job(5, state=JobState.CANCELLED, created_at=now - 40 * DAY_MS, cancelled_at=now - 31 * DAY_MS),
        _job(6, state=JobState.QUEUED, created_at=now - 90 * DAY_MS),
    ])
    removed = asyncio.run(Retention(store, keep_rules(ClusterConfig())).sweep(now))
    assert removed == 3
    assert sorted(j.id for j in store.list_jobs()) == ["resize-v1-0002", "resize-v1-0004", "resize-v1-0006"]
    assert store.integrity_problems() == []


def test_retention_keeps_at_most_a_count_per_state_in_small_batches(store: JobStore,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "DELETE_BATCH", 3)
    monkeypatch.setattr(retention, "DELETE_BATCH", 3)
    store.save_rows(_job(n, state=JobState.COMPLETED, completed_at=float(2000 + n)) for n in range(20))
    store.save_rows(_job(n, state=JobState.DEAD, failed_at=float(2000 + n)) for n in range(20, 24))
    transactions = []
    real = store._transaction
    monkeypatch.setattr(store, "_transaction", lambda: transactions.append(1) or real())
    rules = (Keep(JobState.COMPLETED, max_count=5), Keep(JobState.DEAD, max_count=10))
    assert asyncio.run(Retention(store, rules).sweep()) == 15
    assert [j.id for j in store.list_jobs(state="completed")] == [f"resize-v1-{n:04d}" for n in range(19, 14, -1)]
    assert store.count_by_state() == {"completed": 5, "dead": 4}
    assert len(transactions) >= 15 // 3, "at most DELETE_BATCH rows per transaction"


def test_the_default_retention_is_bullmq_like() -> None:
    rules = {rule.state: rule for rule in keep_rules(ClusterConfig())}
    assert rules[JobState.COMPLETED].max_age_s == 7 * 86400
    assert rules[JobState.DEAD].max_age_s == rules[JobState.CANCELLED].max_age_s == 30 * 86400


# group commit


@pytest.fixture
def engine(store: JobStore) -> Iterator[tuple[JobEngine, zmq.Socket]]:
    ctx = zmq.Context()
    endpoint = f"inproc://events-{uuid.uuid4().hex}"
    bus = EventBus(ctx, endpoint, store.last_seq())
    sub = ctx.socket(zmq.SUB)
    sub.connect(endpoint)
    sub.subscribe(b"")
    deadline = time.monotonic() + 5
    while not sub.poll(10):  # the subscription is live once a probe gets through
        assert time.monotonic() < deadline
        bus.publish(Event("probe", 0, 0.0, {}))
    while sub.poll(50):
        sub.recv_multipart()
    yield JobEngine(store, bus, RetryTracker(RetryPolicy())), sub
    sub.close(linger=0)
    bus.close()
    ctx.term()


def test_a_batch_is_stored_in_one_transaction_before_anything_is_published(
        engine: tuple[JobEngine, zmq.Socket], store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    eng, sub = engine
    writes = []
    real = store.save_batch
    monkeypatch.setattr(store, "save_batch", lambda *a: writes.append(len(a[1])) or real(*a))
    sent = []
    with eng.batch():
        jobs = [eng.submit("resize", "v1", {"width": 2 * n + 2, "height": 2}, priority=Priority.NORMAL)[0]
                for n in range(5)]
        eng.after_commit(lambda: sent.append(store.get_job(jobs[-1].id) is not None))
        started = eng.next_job()
        eng.start(started, "executor-1")
        assert store.get_job(jobs[0].id) is None and not sub.poll(20), "nothing stored or published yet"
    assert writes == [6], "five submissions and a start, in one transaction"
    assert sent == [True], "the after-commit action ran once the batch was stored"
    assert store.get_job(started.id).state is JobState.RUNNING
    received = [sub.recv_multipart()[0] for _ in range(6)]
    assert received == [b"job:queued"] * 5 + [b"job:started"]


def test_a_flush_inside_a_batch_stores_what_came_before(engine: tuple[JobEngine, zmq.Socket],
                                                        store: JobStore) -> None:
    eng, _ = engine
    with eng.batch():
        job, _ = eng.submit("resize", "v1", {"width": 2, "height": 2}, priority=Priority.NORMAL)
        eng.flush()
        assert store.get_job(job.id) is not None
        eng.pause(True)  # its own write, after the queued event: seqs are stored in order
    assert [e.event for e in store.events_since(0)] == ["job:queued", "queue:paused"]


# the control server


def test_coroutine_handlers_answer_and_plain_ones_answer_after_their_batch() -> None:
    order: list[str] = []

    @contextmanager
    def batch() -> Iterator[None]:
        order.append("batch")
        yield
        order.append("stored")

    async def slow(args: dict[str, Any]) -> int:
        await asyncio.sleep(0.01)
        return int(args["n"]) * 2

    def fast(args: dict[str, Any]) -> int:
        order.append("fast")
        return int(args["n"]) + 1

    async def main() -> dict[int, Reply]:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://control-{uuid.uuid4().hex}"
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        router.bind(endpoint)
        dealer.connect(endpoint)
        server = ControlServer(router, {"slow": slow, "fast": fast}, batch=batch)
        serving = asyncio.create_task(server.serve())
        try:
            for request in (Request(1, "slow", {"n": 5}), Request(2, "fast", {"n": 5}), Request(3, "nope", {})):
                await dealer.send(request.encode())
            replies = {}
            while len(replies) < 3:
                reply = Reply.decode(await asyncio.wait_for(dealer.recv(), 5))
                replies[reply.id] = reply
                order.append(f"reply {reply.id}")
            return replies
        finally:
            serving.cancel()
            server.close()
            dealer.close(linger=0)
            ctx.term()

    replies = asyncio.run(main())
    assert (replies[1].result, replies[2].result, replies[3].status) == (10, 6, 400)
    assert order.index("stored") < order.index("reply 2"), "a plain reply waits for its batch"


def test_calls_made_in_one_turn_of_the_loop_travel_as_one_frame_and_are_answered_as_one() -> None:
    frames: list[bytes] = []
    batches: list[int] = []

    @contextmanager
    def batch() -> Iterator[None]:
        batches.append(len(frames))
        yield

    async def slow(args: dict[str, Any]) -> int:
        await asyncio.sleep(0.01)
        return int(args["n"]) * 2

    def fast(args: dict[str, Any]) -> int:
        return int(args["n"]) + 1

    class CountingServer(ControlServer):
        async def receive(self) -> list[list[Any]]:
            burst = await super().receive()
            frames.extend(frame for _identity, frame in burst)
            return burst

    async def main() -> tuple[list[Any], Any]:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://control-{uuid.uuid4().hex}"
        router = ctx.socket(zmq.ROUTER)
        router.bind(endpoint)
        client = ControlClient(ctx, endpoint)
        server = CountingServer(router, {"slow": slow, "fast": fast}, batch=batch)
        tasks = [asyncio.create_task(server.serve()), asyncio.create_task(client.receive_replies())]
        try:
            calls = [client.call("fast", n=n) for n in range(20)] + [client.call("slow", n=4), client.call("nope")]
            answers = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
            alone = await asyncio.wait_for(client.call("fast", n=100), 5)
            return answers, alone
        finally:
            for task in tasks:
                task.cancel()
            server.close()
            client.close()
            ctx.term()

    answers, alone = asyncio.run(main())
    assert answers[:20] == [n + 1 for n in range(20)] and answers[20] == 8
    assert isinstance(answers[21], RpcError) and answers[21].status == 400
    assert alone == 101
    assert len(frames) == 2, f"22 calls of one turn, then one more: {len(frames)} frames"
    assert Request.decode_many(frames[0]) == ([Request(n + 1, "fast", {"n": n}) for n in range(20)]
                                              + [Request(21, "slow", {"n": 4}), Request(22, "nope", {})], True)
    assert Request.decode_many(frames[1])[1] is False, "a lone call is a plain request"


# the hour's statistics and the loop probe


def test_window_statistics_follow_the_commits() -> None:
    window = WindowStats()
    now = time.time() * 1000
    job = Job(id="j", type="resize", video_id="v", params={}, queued_at=now - 300, started_at=now - 200,
              completed_at=now)
    window.observe(job, EventName.STARTED)
    window.observe(job, EventName.COMPLETED)
    window.observe(Job(id="k", type="resize", video_id="v", params={}), EventName.PERMANENT_FAILURE)
    summary = window.summary()
    assert summary["jobsPerMinute"][-1] == 1 and sum(summary["jobsPerMinute"]) == 1
    assert summary["waitMs"] == {"count": 1, "mean": 100.0, "p95": 100.0}
    assert summary["runMs"]["count"] == 1 and summary["runMs"]["mean"] == 200.0
    assert summary["successRate"] == 0.5
    assert window.summary(now + 2 * 3600_000)["waitMs"]["count"] == 0, "an hour later it is forgotten"


def _hold_the_loop(seconds: float) -> None:
    """A handler that computes for this long without awaiting, as a slow request would."""
    time.sleep(seconds)


def test_the_loop_lag_probe_sees_a_blocked_loop() -> None:
    probe = LoopLag()

    async def main() -> None:
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0)  # the probe is asleep now
        _hold_the_loop(0.15)  # the probe wakes at least 100 ms late
        while not probe.recent:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert probe.recent_max() >= 0.1 and probe.histogram.count >= 1


def test_stored_event_bodies_are_the_bytes_the_pub_socket_sent(store: JobStore) -> None:
    events = [Event("job:queued", 1, 1796121580990.356, {"jobId": "a", "userId": "ann", "x": [1, {"y": None}],
                                                         "name": "café"}),
              Event("queue:paused", 2, 5.0, {"paused": True})]
    store.append_events(events)
    assert [body.encode() for body in store.event_bodies_since(0)] == [e.body() for e in events]
    assert store.event_bodies_since(0, owner="bob") == [events[1].body().decode()]


def test_a_call_the_primary_never_answers_fails_with_503_and_a_later_call_still_goes_through() -> None:
    async def main() -> tuple[list[Any], Any]:
        ctx = zmq.asyncio.Context()
        endpoint = f"inproc://control-{uuid.uuid4().hex}"
        router = ctx.socket(zmq.ROUTER)
        router.bind(endpoint)
        client = ControlClient(ctx, endpoint, timeout_s=0.2)
        replies = asyncio.create_task(client.receive_replies())
        try:
            unanswered = [client.call("fast", n=n) for n in range(3)]  # nobody serves the router yet
            failures = await asyncio.wait_for(asyncio.gather(*unanswered, return_exceptions=True), 5)
            await asyncio.wait_for(router.recv_multipart(), 5)  # the frame did arrive, unanswered
            server = ControlServer(router, {"fast": lambda args: int(args["n"]) + 1})
            serving = asyncio.create_task(server.serve())
            try:
                return failures, await asyncio.wait_for(client.call("fast", n=1), 5)
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
        finally:
            replies.cancel()
            await asyncio.gather(replies, return_exceptions=True)
            router.close(linger=0)
            client.close()
            ctx.term()

    failures, later = asyncio.run(main())
    assert [(type(f), getattr(f, "status", None)) for f in failures] == [(RpcError, 503)] * 3, failures
    assert later == 2
