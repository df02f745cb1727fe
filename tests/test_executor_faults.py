"""Executors cannot wedge: a job that raises ends its attempt, a run silent past its deadline is stalled.

Faults are injected with ``VC_TEST_FAULTS`` (workers/executor/faults.py), read only by executors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from cluster.protocol import RUN_STALLED
from tests.harness import Cluster, EventClient, wait_until

Message = dict[str, Any]


def nth_event(ws: EventClient, name: str, job_id: str, count: int = 1, timeout_s: float = 30.0) -> Message:
    def seen(messages: list[Message]) -> bool:
        return len(_matching(messages, name, job_id)) >= count

    ws.wait_for(seen, timeout_s, f"{name} #{count} for {job_id}")
    return _matching(ws.events(job_id), name, job_id)[count - 1]


def _matching(messages: list[Message], name: str, job_id: str) -> list[Message]:
    return [m for m in messages if m.get("event") == name and m["data"].get("jobId") == job_id]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_job_that_raises_fails_transiently_and_the_executor_takes_the_next_job(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, env={"VC_TEST_FAULTS": "raise@extract-audio"},
                              extra=["--job-policies", "extract-audio:retries=1,backoff_ms=50"])
    [executor] = cluster.executor_pids()
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    with cluster.client() as client:
        response = client.patch("/api/video/extract-audio", params={"videoId": video_id}, json={})
    assert response.status_code == 202, response.text
    broken = response.json()["jobId"]

    failed = nth_event(ws, "job:failed", broken)["data"]
    assert failed["error"] == "internal error: InjectedFault: injected into extract-audio"
    assert failed["retryInMs"] > 0, "transient: retried"
    assert nth_event(ws, "job:permanent-failure", broken)["data"]["totalAttempts"] == 2

    done = cluster.resize(video_id, 160, 120).json()["jobId"]
    completed = nth_event(ws, "job:completed", done)["data"]
    assert completed["result"]["file"] == "160x120.mp4"
    assert cluster.job(done)["executor"] == f"executor-{executor}", "the same executor, still taking work"
    assert cluster.executor_pids() == [executor]


def test_a_run_silent_past_its_deadline_is_stalled_and_runs_again_elsewhere(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, env={"VC_TEST_FAULTS": "hang@convert"},
                              extra=["--job-stall-grace-s", "0.5"])
    [victim] = cluster.executor_pids()
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    job_id = cluster.convert(video_id, "webm", timeout=1).json()["jobId"]
    assert nth_event(ws, "job:started", job_id)["data"]["attempt"] == 0

    stalled = nth_event(ws, "job:stalled", job_id, timeout_s=15)["data"]
    assert stalled["reason"] == RUN_STALLED
    wait_until(lambda: gone(victim), 5, "the primary to kill the silent executor")
    again = nth_event(ws, "job:started", job_id, count=2, timeout_s=30)["data"]
    assert again["attempt"] == 0, "a stalled attempt does not count against the job"
    assert cluster.job(job_id)["executor"] != f"executor-{victim}"
    names = [m["event"] for m in ws.events(job_id)]
    assert names[:3] == ["job:queued", "job:started", "job:stalled"]

    with cluster.client() as client:
        assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    nth_event(ws, "job:cancelled", job_id)
