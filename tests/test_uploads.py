"""Uploads and asset downloads (items 2 and 4)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster


def stored_files(cluster: Cluster) -> list[Path]:
    return sorted(p for p in (cluster.data_dir / "storage").rglob("*") if p.is_file())


def test_upload_is_probed_and_gets_a_thumbnail(cluster: Cluster, clip: Path) -> None:
    video_id = cluster.upload(clip)
    with cluster.client() as client:
        videos = client.get("/api/videos").json()
        thumbnail = client.get("/get-video-asset", params={"videoId": video_id, "type": "thumbnail"})
        original = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"})
    video = next(v for v in videos if v["videoId"] == video_id)
    assert video["dimensions"] == {"width": 320, "height": 240}
    assert video["duration"] == pytest.approx(2.0, abs=0.1)
    assert (video["videoCodec"], video["audioCodec"], video["extension"]) == ("h264", "aac", "mp4")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content[:2] == b"\xff\xd8"
    assert original.headers["content-type"] == "video/mp4"
    assert original.content == clip.read_bytes()


def test_not_a_video_gets_415_and_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client() as client:
        response = client.post("/api/upload-video", content=b"definitely not a video" * 1000,
                               headers={"filename": "fake.mp4"})
    assert response.status_code == 415
    assert "not a video" in response.json()["error"]
    assert stored_files(cluster) == []


@pytest.mark.parametrize("headers, body, status", [
    ({"filename": "clip.txt"}, b"x", 400),
    ({"filename": "clip"}, b"x", 400),
    ({}, b"x", 400),
    ({"filename": "clip.mp4"}, b"", 400),
])
def test_bad_uploads_are_refused(cluster: Cluster, headers: dict[str, str], body: bytes, status: int) -> None:
    with cluster.client() as client:
        response = client.post("/api/upload-video", content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]
    assert stored_files(cluster) == []


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_upload_is_streamed_not_held_in_memory(cluster: Cluster) -> None:
    chunk = os.urandom(1 << 20)
    total_mib = 200

    def body() -> Iterator[bytes]:
        for _ in range(total_mib):
            yield chunk

    workers = cluster.pids("web")
    before = {pid: _peak_rss_kib(pid) for pid in workers}
    with cluster.client() as client:
        response = client.post("/api/upload-video", content=body(), headers={"filename": "big.mp4"})
    assert response.status_code == 415  # random bytes: streamed to disk, probed, refused
    growth_mib = max(_peak_rss_kib(pid) - before[pid] for pid in workers) / 1024
    assert growth_mib < total_mib / 4, f"a web worker's peak memory grew by {growth_mib:.0f} MiB"
    assert stored_files(cluster) == []


def test_assets_that_do_not_exist(cluster: Cluster, clip: Path) -> None:
    video_id = cluster.upload(clip)
    with cluster.client() as client:
        missing_video = client.get("/get-video-asset", params={"videoId": "ffff", "type": "original"})
        not_made_yet = client.get("/get-video-asset", params={"videoId": video_id, "type": "resize",
                                                               "dimensions": "100x100"})
        bad_type = client.get("/get-video-asset", params={"videoId": video_id, "type": "poster"})
    assert missing_video.status_code == 404
    assert not_made_yet.status_code == 404
    assert bad_type.status_code == 400


def test_the_filename_may_come_in_the_query_for_names_a_header_cannot_carry(cluster: Cluster, clip: Path) -> None:
    with cluster.client() as client:
        response = client.post("/api/upload-video", params={"filename": "café–clip.mp4"}, content=clip.read_bytes())
        assert response.status_code == 201
        assert client.get("/api/videos").json()[0]["name"] == "café–clip.mp4"
