"""ExecutorPool with a real engine (tests/test_engine.py's Primary) and a fake socket: run deadlines, bad reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cluster.protocol import LOST_NO_HEARTBEAT, RUN_STALLED, ExecutorKind, ExecutorMessage
from primary.dispatch import ExecutorPool
from tests.test_engine import FAST, Primary

IDENTITY = b"executor-7"
GRACE_S = 2.0


class FakeSocket:
    def __init__(self, incoming: list[list[bytes]] | None = None) -> None:
        self.sent: list[tuple[bytes, ExecutorMessage]] = []
        self._incoming = list(incoming or [])

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append((frames[0], ExecutorMessage.decode(frames[1])))

    async def recv_multipart(self, copy: bool = True) -> list[bytes]:
        if not self._incoming:
            raise asyncio.CancelledError
        return self._incoming.pop(0)

    def getsockopt(self, option: int) -> int:
        """Only ZMQ.EVENTS, as the pool's burst reader asks: readable while messages wait."""
        assert option == zmq.EVENTS
        return zmq.POLLIN if self._incoming else 0


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Primary]:
    context = zmq.Context()
    opened = Primary(context, tmp_path / "jobs.db", FAST)
    yield opened
    opened.close()
    context.term()


def pool_with_a_running_job(primary: Primary) -> tuple[ExecutorPool, FakeSocket, list[int], str]:
    socket, killed = FakeSocket(), []
    pool = ExecutorPool(socket, primary.engine, lambda _video_id: {"info": {}},  # type: ignore[arg-type]
                        timeout_s=5.0, threads_per_ffmpeg=1, kill=killed.append, run_grace_s=GRACE_S)
    pool.handle(IDENTITY, ExecutorMessage(ExecutorKind.HELLO, payload={"pid": 4242}))
    pool.handle(IDENTITY, ExecutorMessage(ExecutorKind.READY))
    job, _ = primary.submit()
    [(_, run)] = [(i, m) for i, m in socket.sent if m.kind == ExecutorKind.RUN]
    assert run.payload["jobId"] == job.id
    return pool, socket, killed, run.run_id


def check_with_heartbeats(pool: ExecutorPool, at: float) -> None:
    """The deadlines at monotonic time ``at``, the executor having heart-beat just then."""
    if IDENTITY in pool.executors:
        pool.executors[IDENTITY].last_seen = at
    pool.check_deadlines(at)


def test_a_run_is_stalled_past_its_timeout_and_grace_and_its_late_result_is_ignored(primary: Primary) -> None:
    pool, _, killed, run_id = pool_with_a_running_job(primary)
    job = primary.engine.job_for_run(run_id)
    assert job is not None
    deadline = time.monotonic() + job.timeout_s + GRACE_S
    check_with_heartbeats(pool, deadline - 1)
    assert (killed, primary.names(job.id)) == ([], ["job:queued", "job:started"])

    check_with_heartbeats(pool, deadline + 1)
    assert killed == [4242], "killed, so it can never finish the job a second time"
    assert primary.names(job.id) == ["job:queued", "job:started", "job:stalled", "job:queued"]
    assert dict(primary.events(job.id))["job:stalled"]["reason"] == RUN_STALLED
    assert dict(primary.events(job.id))["job:stalled"]["executor"] == primary.engine.store.attempts(job.id)[0].executor
    assert primary.engine.active[job.id].attempts == 0

    pool.handle(IDENTITY, ExecutorMessage(ExecutorKind.DONE, run_id, {"result": {"file": "late.mp4"}}))
    assert primary.names(job.id)[-1] == "job:queued" and primary.engine.active[job.id].result is None


def test_a_silent_executor_is_lost_before_its_run_deadline(primary: Primary) -> None:
    pool, _, killed, run_id = pool_with_a_running_job(primary)
    job = primary.engine.job_for_run(run_id)
    assert job is not None
    pool.check_deadlines(time.monotonic() + 6.0)  # past the 5 s heartbeat timeout, long before the run's
    assert killed == [4242]
    assert dict(primary.events(job.id))["job:stalled"]["reason"] == LOST_NO_HEARTBEAT


@pytest.mark.parametrize("payload", [{}, {"progress": "lots"}, {"progress": None}])
def test_a_malformed_report_is_logged_not_fatal(primary: Primary, payload: dict[str, Any]) -> None:
    pool, _, _, run_id = pool_with_a_running_job(primary)
    bad = ExecutorMessage(ExecutorKind.PROGRESS, run_id, payload).encode()
    good = ExecutorMessage(ExecutorKind.PROGRESS, run_id, {"progress": 50.0}).encode()
    pool._socket = FakeSocket([[IDENTITY, bad], [IDENTITY, good]])  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(pool.serve())
    job = primary.engine.job_for_run(run_id)
    assert job is not None and job.progress == 50.0, "the pool served on after the bad report"
