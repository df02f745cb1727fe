"""Fencing with media on S3 (issue 12, item 5), against moto's real HTTP server as in test_s3: an executor
only uploads under its run's keys; the primary publishes them when it accepts the run, and deletes those
of every run it refuses or has given up on, and those nobody removed (a sweep).

First the executor pool with a real engine, store and S3 (the executors' sockets recorded, as in
test_remote), where a run can be lost and its late report delivered at will; then whole clusters.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq

from cluster.protocol import ExecutorMessage, Priority
from cluster.s3_storage import S3Storage
from cluster.storage import StorageSettings
from primary.dispatch import ExecutorPool
from primary.engine import EngineError, JobEngine
from primary.event_bus import EventBus
from primary.retry import RetryPolicy, RetryTracker
from primary.run_files import RunFiles
from primary.store import JobStore
from tests.harness import Cluster, EventClient, wait_until
from tests.test_remote import FakeSocket
from tests.test_s3 import CREDENTIALS, PREFIX, bucket, keys, s3, s3_server  # noqa: F401 - fixtures (skips without moto)

VIDEO = {"info": {"format": "mp4"}}


def run_keys(s3: Any, bucket: str, prefix: str = PREFIX) -> list[str]:  # noqa: F811
    return [k for k in keys(s3, bucket, prefix) if "/.runs/" in k]


def body(s3: Any, bucket: str, key: str) -> bytes:  # noqa: F811
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


class Pool:
    """An executor pool with a real engine and store, S3 storage under its own prefix, recorded sockets."""

    def __init__(self, tmp_path: Path, s3_server: str, bucket: str) -> None:  # noqa: F811
        self.prefix = f"fence-{uuid.uuid4().hex[:8]}"
        self.context = zmq.Context()
        self.store = JobStore(tmp_path / "cluster.db")
        self.bus = EventBus(self.context, f"inproc://events-{os.getpid()}-{self.prefix}", self.store.last_seq())
        self.engine = JobEngine(self.store, self.bus, RetryTracker(RetryPolicy(initial_ms=10)))
        self.storage = S3Storage(StorageSettings("s3", bucket, self.prefix, s3_server), tmp_path / "scratch")
        self.files = RunFiles(self.storage, lambda _v: VIDEO)
        self.socket = FakeSocket()
        self.pool = ExecutorPool(self.socket, self.engine, lambda _v: VIDEO, 60.0, 1, lambda _pid: None,
                                 files=self.files)

    def join(self, identity: bytes) -> str:
        self.pool.handle(identity, ExecutorMessage("hello", payload={"pid": 7}), self.socket)
        self.pool.handle(identity, ExecutorMessage("ready"), self.socket)
        return self.socket.run_id(identity)

    def upload(self, run_id: str, name: str, data: bytes) -> str:
        """What an executor's `save_outputs` puts under its run's keys."""
        key = f"{self.storage.run_dir('v1', run_id)}/{name}"
        self.storage.client.put_object(Bucket=self.storage.bucket, Key=key, Body=data)
        return key

    def final(self, name: str) -> str:
        return f"{self.storage.video_dir('v1')}/{name}"

    def report(self, identity: bytes, kind: str, run_id: str, **payload: Any) -> None:
        self.pool.handle(identity, ExecutorMessage(kind, run_id, {"videoId": "v1", **payload}), self.socket)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e.data for e in self.store.events_since(0) if e.event == name]

    async def settle(self) -> None:
        await self.pool.settle()
        await self.files.settle()

    def close(self) -> None:
        self.engine.close()
        self.bus.close()
        self.store.close()
        self.storage.close()
        self.context.term()


@pytest.fixture
def pool(tmp_path: Path, s3_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:  # noqa: F811
    for name, value in CREDENTIALS.items():  # the primary's own, from boto3's usual chain
        monkeypatch.setenv(name, value)
    made = Pool(tmp_path, s3_server, bucket)
    yield made
    made.close()


def test_only_the_accepted_run_is_published_and_a_lost_runs_late_report_publishes_nothing(
        pool: Pool, s3: Any, bucket: str) -> None:  # noqa: F811
    async def scenario() -> None:
        s3.put_object(Bucket=bucket, Key=pool.final("64x48.mp4"), Body=b"an earlier job's")
        job, _ = pool.engine.submit("resize", "v1", {"width": 64, "height": 48}, priority=Priority.NORMAL)
        run_a = pool.join(b"a")
        pool.upload(run_a, "64x48.mp4", b"from a")
        pool.pool.lose(b"a", "executor lost: no heartbeat")  # a partition: a goes on, unseen
        await pool.settle()
        assert run_keys(s3, bucket, pool.prefix) == [], "a lost run's keys are deleted"
        run_b = pool.join(b"b")
        pool.upload(run_a, "64x48.mp4", b"from a, late")  # a's upload went on after the partition
        pool.upload(run_a, "original.mp4", b"from a, late")
        pool.report(b"a", "done", run_a, result={"from": "a"})
        await pool.settle()
        assert body(s3, bucket, pool.final("64x48.mp4")) == b"an earlier job's", "the late report published nothing"
        assert run_keys(s3, bucket, pool.prefix) == [], "and its keys are deleted"

        pool.upload(run_b, "64x48.mp4", b"from b")
        pool.upload(run_b, "original.mp4", b"not b's to write")  # only the job's own output is published
        pool.report(b"b", "done", run_b, result={"from": "b"})
        assert body(s3, bucket, pool.final("64x48.mp4")) == b"an earlier job's", "not visible before acceptance"
        assert pool.engine.active[job.id].state.value == "running" and pool.events("job:completed") == []
        with pytest.raises(EngineError, match="completing") as refused:
            pool.engine.cancel(job.id)  # the publish is under way: a cancel now would come after it
        assert refused.value.status == 409
        pool.report(b"b", "done", run_b, result={"from": "b, again"})  # a repeated report deletes nothing
        pool.pool.lose(b"b", "executor lost: no heartbeat")  # nor does losing b now: the run is the primary's
        await pool.settle()
        assert body(s3, bucket, pool.final("64x48.mp4")) == b"from b"
        assert pool.final("original.mp4") not in keys(s3, bucket, pool.prefix)
        assert run_keys(s3, bucket, pool.prefix) == []
        assert [(e["jobId"], e["result"]) for e in pool.events("job:completed")] == [(job.id, {"from": "b"})]
        assert pool.events("job:stalled")[-1]["reason"] == "executor lost: no heartbeat"  # a's, not b's
        assert len(pool.events("job:stalled")) == 1

    asyncio.run(scenario())


def test_a_run_whose_outputs_are_missing_fails_and_is_retried(pool: Pool, s3: Any, bucket: str) -> None:  # noqa: F811
    async def scenario() -> None:
        job, _ = pool.engine.submit("hls", "v1", {"renditions": [240]}, priority=Priority.NORMAL)
        run_id = pool.join(b"a")
        pool.upload(run_id, "hls/240p/index.m3u8", b"#EXTM3U")  # its master (the index file) never came
        pool.report(b"a", "done", run_id, result={})
        await pool.settle()
        [failed] = pool.events("job:failed")
        assert failed["jobId"] == job.id and "output missing" in failed["error"] and failed["retryInMs"] > 0
        assert pool.events("job:completed") == [] and keys(s3, bucket, pool.prefix) == []

    asyncio.run(scenario())


def test_a_publish_that_s3_refuses_fails_the_run_transiently(tmp_path: Path, s3_server: str,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    gone = Pool(tmp_path, s3_server, f"gone-{uuid.uuid4().hex[:12]}")  # its bucket was deleted under it

    async def scenario() -> None:
        job, _ = gone.engine.submit("resize", "v1", {"width": 64, "height": 48}, priority=Priority.NORMAL)
        run_id = gone.join(b"a")
        gone.report(b"a", "done", run_id, result={})
        await gone.settle()
        [failed] = gone.events("job:failed")
        assert failed["jobId"] == job.id and failed["error"].startswith("S3 transfer failed")
        assert failed["retryInMs"] > 0 and gone.events("job:completed") == []
        assert gone.engine.completing == set()

    try:
        asyncio.run(scenario())
    finally:
        gone.close()


def test_a_directory_is_published_master_last_and_replaces_the_older_version(
        pool: Pool, s3: Any, bucket: str, s3_server: str) -> None:  # noqa: F811
    async def scenario() -> None:
        s3.put_object(Bucket=bucket, Key=pool.final("hls/720p/seg_000.ts"), Body=b"an older ladder's")
        pool.engine.submit("hls", "v1", {"renditions": [240]}, priority=Priority.NORMAL)
        run_id = pool.join(b"a")
        for name in ("hls/240p/seg_000.ts", "hls/240p/index.m3u8", "hls/master.m3u8"):
            pool.upload(run_id, name, name.encode())
        async with httpx.AsyncClient(base_url=f"{s3_server}/moto-api/recorder") as recorder:
            await recorder.post("/reset-recording")
            await recorder.post("/start-recording")
            try:
                pool.report(b"a", "done", run_id, result={})
                await pool.settle()
            finally:
                await recorder.post("/stop-recording")
            recording = (await recorder.get("/download-recording")).text
        copies = [url for method, url in re.findall(r'"method": "(\w+)", "url": "([^"]+)"', recording)
                  if method == "PUT" and pool.prefix in url]
        assert len(copies) == 3 and copies[-1].endswith("/v1/hls/master.m3u8"), copies
        assert keys(s3, bucket, pool.prefix) == [pool.final(n) for n in ("hls/240p/index.m3u8", "hls/240p/seg_000.ts",
                                                                          "hls/master.m3u8")]

    asyncio.run(scenario())


def test_the_sweep_deletes_the_keys_of_runs_not_running(pool: Pool, s3: Any, bucket: str) -> None:  # noqa: F811
    async def scenario() -> None:
        pool.engine.submit("resize", "v1", {"width": 64, "height": 48}, priority=Priority.NORMAL)
        live = pool.join(b"a")
        kept = pool.upload(live, "64x48.mp4", b"uploading")
        dead = [uuid.uuid4().hex for _ in range(3)]  # executors killed mid-upload: nobody reports them
        for run_id in dead:
            pool.upload(run_id, "64x48.mp4", b"half")
        is_running = lambda run_id: pool.engine.job_for_run(run_id) is not None
        assert await pool.files.sweep(is_running) == 3
        assert run_keys(s3, bucket, pool.prefix) == [kept], "a running run's keys stay"
        assert await pool.files.sweep(is_running) == 0

    asyncio.run(scenario())


# --- whole clusters ---------------------------------------------------------------------------

@pytest.fixture
def fenced_cluster(tmp_path: Path, s3_server: str, bucket: str) -> Iterator[Cluster]:  # noqa: F811
    cluster = Cluster(tmp_path / "data", workers=1, executors=1, env=CREDENTIALS, extra=[
        "--storage", f"s3://{bucket}/{PREFIX}", "--s3-endpoint", s3_server, "--scratch-dir", str(tmp_path / "scratch"),
        "--s3-run-sweep-s", "0.5"])
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        cluster.kill_leftovers()


@pytest.fixture
def events(fenced_cluster: Cluster) -> Iterator[EventClient]:
    client = EventClient(fenced_cluster.ws_url, fenced_cluster.token)
    yield client
    client.close()


def submit(cluster: Cluster, path: str, video_id: str, body: dict[str, Any]) -> str:
    with cluster.client() as client:
        response = client.post(path, params={"videoId": video_id}, json=body)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def test_outputs_are_visible_when_the_job_completes_and_a_cancelled_run_changes_nothing(
        fenced_cluster: Cluster, events: EventClient, s3: Any, bucket: str, s3_server: str,  # noqa: F811
        long_clip: Path) -> None:
    video_id = fenced_cluster.upload(long_clip)
    master = f"{PREFIX}/{video_id}/hls/master.m3u8"
    first = submit(fenced_cluster, "/api/video/hls", video_id, {"renditions": [240]})
    events.wait_event("job:completed", first, timeout_s=90)
    stored = keys(s3, bucket)  # at once: what job:completed announces is stored and visible before it
    assert master in stored and f"{PREFIX}/{video_id}/hls/240p/index.m3u8" in stored
    assert [k for k in stored if "/.runs/" in k] == []
    published = {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in stored if "/hls/" in k}

    httpx.post(f"{s3_server}/moto-api/recorder/reset-recording")
    httpx.post(f"{s3_server}/moto-api/recorder/start-recording")
    try:
        second = submit(fenced_cluster, "/api/video/hls", video_id, {"renditions": [240]})  # the same output
        events.wait_event("job:progress", second, timeout_s=60)
        with fenced_cluster.client() as client:
            assert client.delete(f"/api/jobs/{second}").status_code == 200
        events.wait_event("job:cancelled", second)
        scratch = fenced_cluster.data_dir.parent / "scratch" / "runs"
        wait_until(lambda: list(scratch.iterdir()) == [], 20, "the cancelled run's scratch dir to go")
        wait_until(lambda: run_keys(s3, bucket) == [], 20, "the cancelled run's keys to go")
    finally:
        httpx.post(f"{s3_server}/moto-api/recorder/stop-recording")
    recording = httpx.get(f"{s3_server}/moto-api/recorder/download-recording").text
    writes = [url for method, url in re.findall(r'"method": "(\w+)", "url": "([^"]+)"', recording)
              if method in ("PUT", "POST", "DELETE") and f"/{PREFIX}/{video_id}/" in url]
    assert writes == [], "the cancelled run wrote no final key"
    assert {k: s3.head_object(Bucket=bucket, Key=k)["ETag"] for k in keys(s3, bucket) if "/hls/" in k} == published
    with fenced_cluster.client() as client:
        assert client.get(f"/hls/{video_id}/master.m3u8").status_code == 200


def test_a_restarted_primary_sweeps_the_run_keys_left_and_then_those_of_runs_not_running(
        fenced_cluster: Cluster, s3: Any, bucket: str, long_clip: Path) -> None:  # noqa: F811
    video_id = fenced_cluster.upload(long_clip)
    job_id = fenced_cluster.resize(video_id, 320, 240).json()["jobId"]
    wait_until(lambda: fenced_cluster.job(job_id)["progress"] > 0, 60, "the resize to make progress")
    left = f"{PREFIX}/.runs/{uuid.uuid4().hex}/{video_id}/320x240.mp4"  # an executor killed mid-upload left it
    s3.put_object(Bucket=bucket, Key=left, Body=b"half")
    fenced_cluster.kill_primary()  # its executor dies with it, mid-run
    fenced_cluster.kill_leftovers()
    fenced_cluster.start()
    assert left not in keys(s3, bucket), "swept at the start"
    later = f"{PREFIX}/.runs/{uuid.uuid4().hex}/{video_id}/320x240.mp4"  # a remote executor cut off, uploading
    s3.put_object(Bucket=bucket, Key=later, Body=b"late")
    wait_until(lambda: later not in keys(s3, bucket), 20, "the periodic sweep")
    wait_until(lambda: fenced_cluster.job(job_id)["state"] == "completed", 90, "the resize, run again")
    assert f"{PREFIX}/{video_id}/320x240.mp4" in keys(s3, bucket) and run_keys(s3, bucket) == []
