"""Job requests, execution, outputs and retries (items 3, 4, 5, 7)."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.media import find_ffmpeg, probe
from tests.harness import Cluster, EventClient


@pytest.fixture
def video_id(cluster: Cluster, clip: Path) -> str:
    return cluster.upload(clip)


def test_resize_runs_in_an_executor_and_serves_its_output(cluster: Cluster, video_id: str,
                                                          ws_factory: Callable[..., EventClient]) -> None:
    ws = ws_factory(cluster)
    response = cluster.resize(video_id, 160, 120)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert job_id.startswith(f"resize-{video_id}-")
    ws.wait_event("job:completed", job_id)
    job = cluster.job(job_id)
    assert job["state"] == "completed" and job["attempts"] == 1 and job["progress"] == 100
    assert job["executor"] == f"executor-{cluster.executor_pids()[0]}"
    assert job["startedAt"] >= job["queuedAt"] and job["completedAt"] >= job["startedAt"]
    assert job["result"]["width"] == 160 and job["result"]["height"] == 120
    output = cluster.data_dir / "storage" / video_id / "160x120.mp4"
    assert (probe(output).width, probe(output).height) == (160, 120)
    with cluster.client() as client:
        asset = client.get("/get-video-asset", params={"videoId": video_id, "type": "resize",
                                                        "dimensions": "160x120"})
        videos = client.get("/api/videos").json()
    assert asset.status_code == 200 and asset.headers["content-type"] == "video/mp4"
    assert asset.content == output.read_bytes()
    assert videos[0]["resizes"]["160x120"]["state"] == "completed"


@pytest.mark.parametrize("fmt, content_type, codec", [
    ("webm", "video/webm", "vp9"), ("mkv", "video/x-matroska", "h264"), ("avi", "video/x-msvideo", "mpeg4"),
    ("mov", "video/quicktime", "h264"), ("flv", "video/x-flv", "h264"),
])
def test_convert_to_every_format(cluster: Cluster, video_id: str, ws_factory: Callable[..., EventClient],
                                 fmt: str, content_type: str, codec: str) -> None:
    ws = ws_factory(cluster)
    response = cluster.convert(video_id, fmt)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    ws.wait_event("job:completed", job_id)
    output = cluster.data_dir / "storage" / video_id / f"converted.{fmt}"
    assert probe(output).video_codec == codec
    with cluster.client() as client:
        asset = client.get("/get-video-asset", params={"videoId": video_id, "type": "converted", "format": fmt})
        videos = client.get("/api/videos").json()
    assert asset.headers["content-type"] == content_type
    assert videos[0]["conversions"][fmt]["jobId"] == job_id
    assert not list(output.parent.glob(".*.part")), "no partial file is left"


@pytest.mark.parametrize("body, status", [
    ({"width": 0, "height": 240}, 400),
    ({"width": -320, "height": 240}, 400),
    ({"width": 321, "height": 240}, 400),
    ({"width": 7682, "height": 240}, 400),
    ({"width": 320, "height": 4322}, 400),
    ({"width": "wide", "height": 240}, 400),
    ({"height": 240}, 400),
    ({"width": 320, "height": 240, "priority": "urgent"}, 400),
    ({"width": 320, "height": 240, "timeout": -1}, 400),
])
def test_bad_resize_requests_queue_nothing(cluster: Cluster, video_id: str, body: dict[str, object],
                                           status: int) -> None:
    with cluster.client() as client:
        response = client.put("/api/video/resize", json={"videoId": video_id, **body})
    assert response.status_code == status
    assert response.json()["error"]
    with cluster.client() as client:
        assert client.get("/api/jobs").json() == []


def test_requests_for_unknown_videos_or_formats(cluster: Cluster, video_id: str) -> None:
    with cluster.client() as client:
        unknown_video = client.put("/api/video/resize", json={"videoId": "abc123", "width": 320, "height": 240})
        unknown_convert = client.put("/api/video/convert", params={"videoId": "abc123"}, json={"format": "webm"})
        unknown_format = client.put("/api/video/convert", params={"videoId": video_id}, json={"format": "gif"})
        own_format = client.put("/api/video/convert", params={"videoId": video_id}, json={"format": "mp4"})
        malformed = client.put("/api/video/resize", content=b"{not json", headers={"content-type": "application/json"})
        unknown_job = client.get("/api/jobs/resize-abc-1")
        jobs = client.get("/api/jobs").json()
    assert unknown_video.status_code == 404 and unknown_convert.status_code == 404
    assert unknown_format.status_code == 400 and own_format.status_code == 400
    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]
    assert unknown_job.status_code == 404
    assert jobs == []


def test_an_identical_job_still_queued_is_returned_not_queued_again(cluster_factory: Callable[..., Cluster],
                                                                   clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    first = cluster.resize(video_id, 160, 120)
    second = cluster.resize(video_id, 160, 120)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["jobId"] == second.json()["jobId"]


def crashing_ffmpeg(tmp_path: Path) -> Path:
    """An ffmpeg that crashes (SIGSEGV) on every job but still makes thumbnails at upload."""
    script = tmp_path / "crashing-ffmpeg"
    script.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = "-progress" ]; then echo "simulated crash" >&2; kill -SEGV $$; fi
done
exec {find_ffmpeg()} "$@"
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_failing_job_is_retried_with_backoff_then_fails_permanently(
        cluster_factory: Callable[..., Cluster], clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(extra=["--ffmpeg", str(crashing_ffmpeg(tmp_path))])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
    ws.wait_event("job:permanent-failure", job_id)
    names = [e["event"] for e in ws.events(job_id)]
    assert names == ["job:queued", "job:started", "job:failed"] * 3 + ["job:queued", "job:started",
                                                                        "job:permanent-failure"]
    failures = [e["data"] for e in ws.events(job_id) if e["event"] == "job:failed"]
    assert [f["currentAttempt"] for f in failures] == [0, 1, 2]
    assert [f["retryInMs"] for f in failures] == [100, 200, 400]
    assert all(f["maxRetries"] == 3 and "SIGSEGV" in f["error"] for f in failures)
    final = ws.events(job_id)[-1]["data"]
    assert final["totalAttempts"] == 4
    queued = [e["data"]["attempt"] for e in ws.events(job_id) if e["event"] == "job:queued"]
    assert queued == [0, 1, 2, 3]
    assert cluster.job(job_id)["state"] == "dead"


def test_retries_are_counted_per_job_not_per_video(cluster_factory: Callable[..., Cluster], clip: Path,
                                                   tmp_path: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(extra=["--ffmpeg", str(crashing_ffmpeg(tmp_path))])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    first = cluster.resize(video_id, 160, 120).json()["jobId"]
    second = cluster.resize(video_id, 320, 180).json()["jobId"]
    for job_id in (first, second):
        assert ws.wait_event("job:permanent-failure", job_id)["data"]["totalAttempts"] == 4


def test_jobs_list_filters(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    cluster.resize(video_id, 160, 120)
    cluster.convert(video_id, "webm")
    with cluster.client() as client:
        assert {j["type"] for j in client.get("/api/jobs").json()} == {"resize", "convert"}
        assert [j["type"] for j in client.get("/api/jobs", params={"type": "convert"}).json()] == ["convert"]
        assert len(client.get("/api/jobs", params={"state": "queued"}).json()) == 2
        assert client.get("/api/jobs", params={"limit": "0"}).status_code == 400
