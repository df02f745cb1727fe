"""Fair shares and a queue per job type, on real clusters with real ffmpeg: users take turns, a paused type
or one at its concurrency limit waits while the others run, and the per-type and dead-letter routes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Cluster, EventClient
from tests.test_job_control import ffmpeg_wrapper

Message = dict[str, Any]


def call(cluster: Cluster, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    with cluster.client(token) as client:
        return client.request(method, path, **kwargs)


def user(cluster: Cluster, name: str) -> str:
    cluster.add_user(name, f"{name}-password")
    return cluster.login(name, f"{name}-password")


def started(ws: EventClient) -> list[str]:
    return [m["data"]["jobId"] for m in ws.events(name="job:started")]


def queue_event(ws: EventClient, name: str, job_type: str) -> Message:
    def seen(messages: list[Message]) -> bool:
        return any(m.get("event") == name and m["data"].get("type") == job_type for m in messages)

    ws.wait_for(seen, 10, f"{name} of {job_type}")
    return next(m for m in ws.events(name=name) if m["data"].get("type") == job_type)


def test_a_light_users_job_starts_before_the_heavy_users_third(cluster_factory: Callable[..., Cluster], clip: Path,
                                                               ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, executors=1, extra=["--job-rate-per-min", "0"])
    heavy, light = user(cluster, "heavy"), user(cluster, "light")
    heavy_video, light_video = cluster.upload(clip, token=heavy), cluster.upload(clip, token=light)
    ws = ws_factory(cluster)

    first = cluster.resize(heavy_video, 64, 48, token=heavy).json()["jobId"]
    ws.wait_event("job:started", first)
    assert call(cluster, "POST", "/api/queue/pause").status_code == 200  # the 49 others all wait behind it
    heavy_jobs = [first]
    for n in range(1, 50):
        response = cluster.resize(heavy_video, 64 + 2 * n, 48, token=heavy)
        assert response.status_code == 202, response.text
        heavy_jobs.append(response.json()["jobId"])
    response = cluster.resize(light_video, 80, 60, token=light)
    assert response.status_code == 202
    light_job = response.json()["jobId"]
    assert ws.wait_event("job:queued", light_job)["data"]["queuePosition"] == 2, "behind one heavy job, not 49"
    with cluster.client(light) as client:
        assert client.get(f"/api/jobs/{light_job}").json()["queuePosition"] == 2

    assert call(cluster, "POST", "/api/queue/resume").status_code == 200
    ws.wait_event("job:started", heavy_jobs[2], timeout_s=60)
    order = started(ws)
    assert order[:4] == [first, heavy_jobs[1], light_job, heavy_jobs[2]]


def test_a_paused_type_waits_across_a_restart_while_other_types_run(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    member = user(cluster, "member")
    assert call(cluster, "POST", "/api/queue/hls/pause", token=member).status_code == 403

    assert call(cluster, "POST", "/api/queue/resize/pause").json() == {"type": "resize", "paused": True}
    assert queue_event(ws, "queue:paused", "resize")["data"]["paused"] is True
    resize = cluster.resize(video_id, 96, 72).json()["jobId"]
    with cluster.client() as client:
        audio = client.patch("/api/video/extract-audio", json={"videoId": video_id}).json()["jobId"]
    ws.wait_event("job:completed", audio)
    stats = call(cluster, "GET", "/api/queue/stats/resize").json()
    assert stats == {"type": "resize", "paused": True, "concurrency": None, "waiting": 1, "running": 0,
                     "delayed": 0, "completed": 0, "failed": 0, "cancelled": 0}
    assert call(cluster, "GET", "/api/queue/stats/extract-audio").json()["completed"] == 1
    assert cluster.job(resize)["state"] == "queued"

    cluster.stop()
    cluster.start()
    ws = ws_factory(cluster)
    assert call(cluster, "GET", "/api/queue/stats/resize").json()["paused"] is True
    assert cluster.job(resize)["state"] == "queued", "still paused after the restart"
    types = call(cluster, "GET", "/api/queue/types").json()["types"]
    assert [t["type"] for t in types if t["paused"]] == ["resize"]

    assert call(cluster, "POST", "/api/queue/resize/resume").json() == {"type": "resize", "paused": False}
    queue_event(ws, "queue:resumed", "resize")
    ws.wait_event("job:completed", resize)
    assert call(cluster, "GET", "/api/queue/stats/resize").json()["completed"] == 1


def test_a_type_at_its_concurrency_limit_waits_while_another_type_runs(
        cluster_factory: Callable[..., Cluster], clip: Path, long_clip: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, executors=2, extra=["--job-policies", "resize:concurrency=1"])
    long_video, video_id = cluster.upload(long_clip), cluster.upload(clip)
    ws = ws_factory(cluster)
    first = cluster.resize(long_video, 320, 240).json()["jobId"]
    ws.wait_event("job:started", first)
    second = cluster.resize(long_video, 160, 120).json()["jobId"]
    with cluster.client() as client:
        audio = client.patch("/api/video/extract-audio", json={"videoId": video_id}).json()["jobId"]
    ws.wait_event("job:completed", audio)  # on the second executor, while the second resize waits
    assert cluster.job(second)["state"] == "queued"
    stats = call(cluster, "GET", "/api/queue/stats/resize").json()
    assert (stats["concurrency"], stats["running"], stats["waiting"]) == (1, 1, 1)

    call(cluster, "DELETE", f"/api/jobs/{first}")
    ws.wait_event("job:started", second)
    call(cluster, "DELETE", f"/api/jobs/{second}")


def test_a_bad_concurrency_limit_is_refused_at_start(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data", extra=["--job-policies", "resize:concurrency=0"])
    with pytest.raises(RuntimeError, match="exited"):
        cluster.start()
    assert "resize:concurrency must be a whole number of at least 1" in cluster.log_tail()
    cluster.stop()


def test_type_routes_refuse_bad_input(cluster: Cluster) -> None:
    for method, path, status in [("GET", "/api/queue/stats/nope", 404), ("POST", "/api/queue/nope/pause", 404),
                                 ("GET", "/api/queue/nope/jobs", 404), ("GET", "/api/queue/resize/jobs?state=x", 400),
                                 ("GET", "/api/queue/resize/jobs?limit=0", 400),
                                 ("GET", "/api/queue/resize/jobs?limit=²", 400),
                                 ("POST", "/api/queue/resize/clean", 400),
                                 ("GET", "/api/queue/stats/" + "a" * 300, 404),
                                 ("POST", "/api/queue/dead-letter/nope-1/retry", 404),
                                 ("GET", "/api/videos/nope/jobs/current", 404)]:
        body = {"json": {"olderThan": -1}} if path.endswith("clean") else {}
        response = call(cluster, method, path, **body)
        assert response.status_code == status, (path, response.text)
        assert response.json()["error"]
    assert "known: resize" in call(cluster, "GET", "/api/queue/stats/nope").json()["error"]
    for method, path in [("GET", "/api/queue/types"), ("GET", "/api/queue/stats/resize"),
                         ("POST", "/api/queue/resize/pause"), ("GET", "/api/queue/resize/jobs"),
                         ("GET", "/api/queue/dead-letter/stats"), ("GET", "/api/queue/dead-letter/jobs"),
                         ("GET", "/api/videos/x/jobs/current")]:
        response = httpx.request(method, cluster.url + path, timeout=10)
        assert response.status_code == 401, path


def test_type_jobs_dead_letters_and_a_videos_current_jobs(cluster_factory: Callable[..., Cluster], clip: Path,
                                                           tmp_path: Path,
                                                           ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="96x72")),
                                                "--job-policies", "resize:retries=0"])
    member = user(cluster, "member")
    video_id = cluster.upload(clip, token=member)
    ws = ws_factory(cluster)
    dead = cluster.resize(video_id, 96, 72, token=member).json()["jobId"]
    ws.wait_event("job:permanent-failure", dead)
    assert call(cluster, "GET", "/api/queue/dead-letter/stats", token=member).json() == {
        "total": 1, "byType": {"resize": 1}}
    assert call(cluster, "GET", "/api/queue/dead-letter/stats").json()["total"] == 1  # the administrator: all
    other = user(cluster, "other")
    assert call(cluster, "GET", "/api/queue/dead-letter/stats", token=other).json() == {"total": 0, "byType": {}}
    assert call(cluster, "GET", "/api/queue/dead-letter/jobs", token=other).json() == []
    assert call(cluster, "POST", f"/api/queue/dead-letter/{dead}/retry", token=other).status_code == 404
    letters = call(cluster, "GET", "/api/queue/dead-letter/jobs", token=member).json()
    assert [letter["jobId"] for letter in letters] == [dead]

    assert call(cluster, "POST", "/api/queue/pause").status_code == 200
    done = cluster.resize(video_id, 160, 120, token=member).json()["jobId"]
    response = call(cluster, "POST", f"/api/queue/dead-letter/{dead}/retry", token=member)
    assert response.status_code == 202 and response.json() == {"jobId": dead, "state": "queued"}
    assert call(cluster, "POST", f"/api/queue/dead-letter/{dead}/retry", token=member).status_code == 409
    current = call(cluster, "GET", f"/api/videos/{video_id}/jobs/current", token=member).json()
    assert [(j["jobId"], j["queuePosition"]) for j in current] == [(done, 1), (dead, 2)]
    assert call(cluster, "GET", f"/api/videos/{video_id}/jobs/current", token=other).status_code == 404

    page = call(cluster, "GET", "/api/queue/resize/jobs?state=queued&limit=1", token=member)
    assert [j["jobId"] for j in page.json()] == [done] and page.headers["X-Next-Cursor"]
    rest = call(cluster, "GET", f"/api/queue/resize/jobs?state=queued&limit=1&before={page.headers['X-Next-Cursor']}",
                token=member)
    assert [j["jobId"] for j in rest.json()] == [dead]
    assert call(cluster, "GET", "/api/queue/resize/jobs", token=other).json() == []
    assert call(cluster, "GET", "/api/queue/extract-audio/jobs", token=member).json() == []

    call(cluster, "POST", "/api/queue/resume")
    ws.wait_event("job:completed", done)
    ws.wait_event("job:permanent-failure", dead, count=2)
    assert call(cluster, "GET", f"/api/videos/{video_id}/jobs/current", token=member).json() == []
    assert call(cluster, "POST", "/api/queue/resize/clean", json={"olderThan": 0}).json() == {
        "type": "resize", "removed": 2}
    assert call(cluster, "GET", "/api/queue/resize/jobs").json() == []


def test_the_pause_of_a_type_is_stored_before_it_is_answered(cluster: Cluster) -> None:
    """A SIGKILL of the primary right after the answer still finds the type paused."""
    assert call(cluster, "POST", "/api/queue/hls/pause").json()["paused"] is True
    cluster.kill_primary()
    cluster.kill_leftovers()
    cluster.start()
    assert call(cluster, "GET", "/api/queue/stats/hls").json()["paused"] is True
