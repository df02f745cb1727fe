"""Every kind of job through ``POST /api/jobs`` on a real cluster: created, deduplicated, refused with
its reason; its result's ``outputs`` download; the new kinds' files served and summarised."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import webvtt
from PIL import Image

from cluster import kinds
from tests.harness import Cluster, EventClient, generate_clip

BODIES: dict[str, dict[str, Any]] = {
    "resize": {"width": 160, "height": 120},
    "convert": {"format": "webm"},
    "extract-audio": {},
    "hls": {"renditions": [240]},
    "thumbnail": {"at": 1.5, "width": 160},
    "storyboard": {"interval": 1, "width": 64},
    "preview": {"start": 0.5, "length": 1.5, "width": 96, "fps": 6},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("kinds") / "data", executors=2)
    try:
        cluster.start()
        cluster.add_user("mallory", "mallory-password")
        yield cluster
    finally:
        cluster.stop()
        cluster.kill_leftovers()


@pytest.fixture(scope="module")
def video_id(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 s, 320x240, with audio."""
    return cluster.upload(generate_clip(tmp_path_factory.mktemp("clips") / "three.mp4", seconds=3))


@pytest.fixture(scope="module")
def completed(cluster: Cluster, video_id: str) -> dict[str, dict[str, Any]]:
    """One job of every kind, made through POST /api/jobs, by kind: its job:completed data."""
    ws = EventClient(cluster.ws_url, cluster.token)
    try:
        with cluster.client() as client:
            job_ids = {}
            for job_type, body in BODIES.items():
                response = client.post("/api/jobs", json={"videoId": video_id, "type": job_type, **body})
                assert response.status_code == 202, (job_type, response.text)
                job_ids[job_type] = response.json()["jobId"]
        return {job_type: ws.wait_event("job:completed", job_id, timeout_s=90)["data"]
                for job_type, job_id in job_ids.items()}
    finally:
        ws.close()


def test_every_kind_completes_and_its_outputs_download(cluster: Cluster, completed: dict[str, Any]) -> None:
    assert set(completed) == set(kinds.KINDS)
    with cluster.client() as client:
        for job_type, data in completed.items():
            outputs = data["result"]["outputs"]
            assert outputs, job_type
            for output in outputs:
                response = client.get(output["url"])
                assert response.status_code == 200, (job_type, output)
                assert response.headers["content-type"].split(";")[0] == output["contentType"], output
                assert len(response.content) == output["size"], output
    hls_names = [o["name"] for o in completed["hls"]["result"]["outputs"]]
    assert hls_names == ["master.m3u8", "240p/index.m3u8", "audio/index.m3u8"]
    assert completed["resize"]["result"]["width"] == 160, "the existing result fields stay"


def test_an_identical_active_job_is_answered_with_its_id(cluster: Cluster, tmp_path: Path) -> None:
    video_id = cluster.upload(generate_clip(tmp_path / "other.mp4", seconds=3))
    with cluster.client() as client:
        client.post("/api/queue/pause")
        try:
            body = {"videoId": video_id, "type": "preview", "start": 1, "length": 1}
            first = client.post("/api/jobs", json=body)
            again = client.post("/api/jobs", json=body)
            other = client.post("/api/jobs", json={**body, "length": 2})
            assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
            assert again.json()["jobId"] == first.json()["jobId"] != other.json()["jobId"]
            listed = client.get("/api/jobs", params={"type": "preview", "state": "queued"}).json()
            assert {j["jobId"] for j in listed} == {first.json()["jobId"], other.json()["jobId"]}
            for job_id in (first.json()["jobId"], other.json()["jobId"]):
                assert client.delete(f"/api/jobs/{job_id}").status_code == 200
        finally:
            client.post("/api/queue/resume")


@pytest.mark.parametrize("body, message", [
    ({"type": "sharpen"}, ("unknown job type 'sharpen': one of resize, convert, extract-audio, hls, thumbnail, "
                           "storyboard, preview")),
    ({}, "type is required: one of resize, convert"),
    ({"type": ["preview"]}, "type is required"),
    ({"type": "preview", "start": 3.5}, "start must be before the end of the video (3 seconds)"),
    ({"type": "preview", "length": 30}, "length must be between 0.5 and 10 seconds"),
    ({"type": "storyboard", "interval": 0}, "interval must be between 0.5 and 600 seconds"),
    ({"type": "storyboard", "width": 33}, "width must be even"),
    ({"type": "thumbnail", "width": "wide"}, "width must be an integer"),
    ({"type": "resize", "width": 100}, "height is required"),
    ({"type": "convert", "format": "mp4"}, "the video is already mp4"),
    ({"type": "hls", "renditions": [2160]}, "unsupported rendition height 2160"),
    ({"type": "preview", "priority": "urgent"}, "priority must be high, normal or low"),
])
def test_bad_requests_are_400_with_their_reason(cluster: Cluster, video_id: str, body: dict[str, Any],
                                                message: str) -> None:
    with cluster.client() as client:
        response = client.post("/api/jobs", json={"videoId": video_id, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)


def test_another_users_video_is_404(cluster: Cluster, video_id: str) -> None:
    token = cluster.login("mallory", "mallory-password")
    with cluster.client(token) as client:
        response = client.post("/api/jobs", json={"videoId": video_id, "type": "storyboard"})
        missing = client.post("/api/jobs", json={"videoId": "0123abcd", "type": "storyboard"})
        asset = client.get("/get-video-asset", params={"videoId": video_id, "type": "storyboard-vtt"})
    assert (response.status_code, missing.status_code, asset.status_code) == (404, 404, 404)


def test_the_new_outputs_download_and_show_in_the_video_summary(cluster: Cluster, video_id: str,
                                                                completed: dict[str, Any]) -> None:
    with cluster.client() as client:
        get = lambda asset_type: client.get("/get-video-asset", params={"videoId": video_id, "type": asset_type})
        sprite, vtt, preview, thumbnail = get("storyboard"), get("storyboard-vtt"), get("preview"), get("thumbnail")
        cues = webvtt.from_string(vtt.text)
        tile = client.get(cues[0].text.split("#")[0])  # the VTT's own image URL, as the browser fetches it
        videos = client.get("/api/videos").json()
        unknown = get("mosaic")
    assert sprite.headers["content-type"] == "image/jpeg" and tile.content == sprite.content
    assert Image.open(BytesIO(sprite.content)).size == (3 * 64, 48), "3 s at one tile a second, 64x48 each"
    assert [(c.start_in_seconds, c.end_in_seconds) for c in cues] == [(0, 1), (1, 2), (2, 3)]
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.headers["cache-control"] == "no-cache"
    webp = Image.open(BytesIO(preview.content))
    assert preview.headers["content-type"] == "image/webp" and webp.n_frames == pytest.approx(9, abs=1)
    assert Image.open(BytesIO(thumbnail.content)).size == (160, 120), "the thumbnail job replaced the upload's"
    assert unknown.status_code == 400 and "storyboard-vtt" in unknown.json()["error"]
    video = next(v for v in videos if v["videoId"] == video_id)
    for field, job_type in (("storyboard", "storyboard"), ("preview", "preview"), ("thumbnailJob", "thumbnail"),
                            ("audio", "extract-audio"), ("hls", "hls")):
        assert video[field]["state"] == "completed", field
        assert video[field]["result"] == completed[job_type]["result"], field
    assert set(video["resizes"]) == {"160x120"} and set(video["conversions"]) == {"webm"}


def test_the_kinds_are_listed_for_the_pages(cluster: Cluster) -> None:
    with cluster.client() as client:
        listed = client.get("/api/kinds").json()
    assert [k["type"] for k in listed] == list(kinds.KINDS)
    assert next(k for k in listed if k["type"] == "storyboard")["downloads"] == ["storyboard", "storyboard-vtt"]
