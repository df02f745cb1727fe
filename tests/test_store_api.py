"""The list routes over HTTP: a bare JSON array, the next page's cursor in X-Next-Cursor and Link,
a video's whole history at /api/videos/{id}/jobs, and job requests answered in one call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Cluster


def _all_pages(client: httpx.Client, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    items, pages, cursor = [], 0, None
    while True:
        response = client.get(path, params={**params, **({"before": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        items += response.json()
        pages += 1
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in response.headers
            return items, pages
        assert response.headers["link"].endswith('; rel="next"') and "before=" in response.headers["link"]


def test_lists_page_by_cursor_and_a_video_has_its_whole_history(cluster_factory: Callable[..., Cluster],
                                                                 clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    first, second = cluster.upload(clip), cluster.upload(clip)
    jobs = [cluster.resize(first, 2 * n + 16, 16).json()["jobId"] for n in range(7)]
    jobs.append(cluster.resize(second, 16, 16).json()["jobId"])
    with cluster.client() as client:
        listed, pages = _all_pages(client, "/api/jobs", limit=3)
        assert [j["jobId"] for j in listed] == jobs[::-1] and pages == 3, "newest first, each job once"
        history, pages = _all_pages(client, f"/api/videos/{first}/jobs", limit=2)
        assert [j["jobId"] for j in history] == jobs[6::-1] and pages == 4
        filtered, _ = _all_pages(client, "/api/jobs", limit=2, videoId=second)
        assert [j["jobId"] for j in filtered] == jobs[7:]
        videos, pages = _all_pages(client, "/api/videos", limit=1)
        assert [v["videoId"] for v in videos] == [second, first] and pages == 2
        assert set(videos[1]["resizes"]) == {f"{2 * n + 16}x16" for n in range(7)}, "the newest of each output"
        for bad in ({"before": "nonsense"}, {"before": "x" * 400}, {"limit": "0"}):
            response = client.get("/api/jobs", params=bad)
            assert response.status_code == 400 and response.json()["error"]
        assert client.get("/api/videos/nosuchvideo/jobs").status_code == 404
        assert client.get("/api/queue/dead-letter", params={"limit": 5}).json() == []


def test_a_video_history_is_only_its_owners(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    cluster.resize(video_id, 64, 48)
    cluster.add_user("bob", "bob-password-1")
    bob = cluster.login("bob", "bob-password-1")
    with cluster.client(bob) as client:
        assert client.get(f"/api/videos/{video_id}/jobs").status_code == 404
        assert client.get("/api/jobs").json() == [] and client.get("/api/videos").json() == []


def test_a_job_request_is_checked_rate_limited_and_deduplicated_by_the_primary(
        cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(executors=0, extra=["--job-rate-per-min", "3"])
    video_id = cluster.upload(clip)
    assert cluster.resize(video_id, 3, 2).status_code == 400, "odd width: refused before any token is taken"
    with cluster.client() as client:
        unknown = client.put("/api/video/resize", json={"videoId": "nosuchvideo", "width": 16, "height": 16})
        assert unknown.status_code == 404
        same = client.put("/api/video/convert", params={"videoId": video_id}, json={"format": "mp4"})
        assert same.status_code == 400 and "already mp4" in same.json()["error"]
        bad_priority = client.put("/api/video/resize", json={"videoId": video_id, "width": 16, "height": 16,
                                                             "priority": "urgent"})
        assert bad_priority.status_code == 400
    first = cluster.resize(video_id, 16, 16)
    assert first.status_code == 202
    again = cluster.resize(video_id, 16, 16)
    assert (again.status_code, again.json()["jobId"]) == (200, first.json()["jobId"])
    assert cluster.resize(video_id, 18, 16).status_code == 202
    limited = cluster.resize(video_id, 20, 16)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    with cluster.client() as client:
        assert len(client.get("/api/jobs").json()) == 2, "the refused request queued nothing"
