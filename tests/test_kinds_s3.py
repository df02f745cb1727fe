"""The new kinds with media on S3 (moto's real HTTP server, as in test_s3): their outputs go through the
run's keys to their final ones, the storyboard's VTT is served through the cluster, its sprite redirected."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import webvtt
from PIL import Image

from tests.harness import Cluster, EventClient, generate_clip
from tests.test_s3 import PREFIX, bucket, keys, s3, s3_cluster, s3_server, ws  # noqa: F401 - fixtures


def make(cluster: Cluster, ws: EventClient, video_id: str, job_type: str, **params: Any) -> dict[str, Any]:  # noqa: F811
    with cluster.client() as client:
        response = client.post("/api/jobs", json={"videoId": video_id, "type": job_type, **params})
    assert response.status_code == 202, response.text
    return ws.wait_event("job:completed", response.json()["jobId"], timeout_s=90)["data"]["result"]


def test_storyboard_preview_and_thumbnail_on_s3(s3_cluster: Cluster, s3: Any, bucket: str,  # noqa: F811
                                                ws: EventClient, tmp_path: Path) -> None:  # noqa: F811
    video_id = s3_cluster.upload(generate_clip(tmp_path / "four.mp4", seconds=4))
    video_prefix = f"{PREFIX}/{video_id}"
    make(s3_cluster, ws, video_id, "storyboard", interval=0.5, width=32)
    board = make(s3_cluster, ws, video_id, "storyboard", interval=2, width=64)  # replaces the first
    preview = make(s3_cluster, ws, video_id, "preview", start=1, length=1, fps=5)
    make(s3_cluster, ws, video_id, "thumbnail", at=2, width=100)
    stored = keys(s3, bucket, video_prefix)
    assert [k for k in keys(s3, bucket) if "/.runs/" in k] == [], "nothing left under run-scoped keys"
    assert [k for k in stored if "/storyboard/" in k] == [f"{video_prefix}/storyboard/sprite.jpg",
                                                          f"{video_prefix}/storyboard/storyboard.vtt"]
    assert f"{video_prefix}/preview.webp" in stored
    with s3_cluster.client() as client:
        vtt = client.get(board["url"])
        cues = webvtt.from_string(vtt.text)
        sprite = client.get(cues[1].text.split("#")[0])
        webp = client.get(preview["url"])
        thumbnail = client.get("/get-video-asset", params={"videoId": video_id, "type": "thumbnail"})
    assert vtt.status_code == 200, "served through the cluster, never redirected"
    assert [(c.start_in_seconds, c.end_in_seconds) for c in cues] == [(0, 2), (2, 4)]
    assert cues[1].text.endswith("#xywh=64,0,64,48")
    assert sprite.status_code == webp.status_code == thumbnail.status_code == 302
    assert Image.open(BytesIO(httpx.get(sprite.headers["location"], timeout=30).content)).size == (128, 48)
    assert Image.open(BytesIO(httpx.get(webp.headers["location"], timeout=30).content)).n_frames >= 4
    assert Image.open(BytesIO(httpx.get(thumbnail.headers["location"], timeout=30).content)).size == (100, 76)
