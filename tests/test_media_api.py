"""The whole media API over HTTP: audio, HLS, ranges, deletion, limits (issue 4, items 4-10)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.media import find_ffmpeg, probe_audio
from tests.harness import Cluster, EventClient, generate_clip


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("clips") / "silent.mp4", audio=False)


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("clips") / "wide.mp4", seconds=8, size="640x360")


def test_extract_audio_as_a_job(cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    with cluster.client() as client:
        response = client.patch("/api/video/extract-audio", params={"videoId": video_id})
        assert response.status_code == 202
        job_id = response.json()["jobId"]
        ws.wait_event("job:completed", job_id)
        asset = client.get("/get-video-asset", params={"videoId": video_id, "type": "audio"})
        videos = client.get("/api/videos").json()
    assert asset.status_code == 200 and asset.headers["content-type"] == "audio/aac"
    assert probe_audio(cluster.data_dir / "storage" / video_id / "audio.aac").codec == "aac"
    assert videos[0]["audio"]["state"] == "completed"
    assert len([e for e in ws.events(job_id) if e["event"] == "job:progress"]) >= 1


def test_a_video_without_audio_is_refused_at_once(cluster: Cluster, silent_clip: Path) -> None:
    video_id = cluster.upload(silent_clip)
    with cluster.client() as client:
        response = client.patch("/api/video/extract-audio", params={"videoId": video_id})
        assert response.status_code == 400 and "no audio" in response.json()["error"]
        assert client.get("/api/jobs").json() == []


def test_hls_ladder_is_served_and_plays_back_over_http(cluster: Cluster, wide_clip: Path,
                                                       ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(wide_clip)
    ws = ws_factory(cluster)
    with cluster.client() as client:
        response = client.post("/api/video/hls", params={"videoId": video_id})
        assert response.status_code == 202
        job_id = response.json()["jobId"]
        completed = ws.wait_event("job:completed", job_id, timeout_s=90)
        master = client.get(f"/hls/{video_id}/master.m3u8")
        assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
        variants = [line for line in master.text.splitlines() if line and not line.startswith("#")]
        assert len(variants) == 2, "240p and 360p: 720p and 1080p are taller than the source"
        playlist = client.get(f"/hls/{video_id}/{variants[0]}")
        segment_name = next(line for line in playlist.text.splitlines() if line.endswith(".ts"))
        segment_path = variants[0].rsplit("/", 1)[0] + "/" + segment_name
        segment = client.get(f"/hls/{video_id}/{segment_path}")
        assert segment.headers["content-type"] == "video/mp2t"
        assert client.get(f"/hls/{video_id}/../original.mp4").status_code == 404
        assert client.get(f"/hls/{video_id}/nope.m3u8").status_code == 404
    assert completed["data"]["result"]["url"] == f"/hls/{video_id}/master.m3u8"
    played = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-headers", f"Authorization: Bearer {cluster.token}\r\n",
         "-i", f"{cluster.url}/hls/{video_id}/master.m3u8", "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120, check=False)
    assert played.returncode == 0, played.stderr


@pytest.mark.parametrize("body, status", [
    ({"renditions": [2160]}, 400), ({"renditions": []}, 400), ({"renditions": "720p"}, 400),
    ({"renditions": [241]}, 400), ({"renditions": [240, 360]}, 202),
])
def test_hls_renditions_are_checked(cluster_factory: Callable[..., Cluster], clip: Path,
                                    body: dict[str, object], status: int) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)  # 240 pixels tall
    with cluster.client() as client:
        response = client.post("/api/video/hls", params={"videoId": video_id}, json=body)
    assert response.status_code == status, response.text


def test_assets_support_ranges_and_name_the_download(cluster: Cluster, clip: Path) -> None:
    video_id = cluster.upload(clip)
    whole = clip.read_bytes()
    with cluster.client() as client:
        full = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"})
        part = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"},
                          headers={"Range": "bytes=100-199"})
        beyond = client.get("/get-video-asset", params={"videoId": video_id, "type": "original"},
                            headers={"Range": f"bytes={len(whole) + 10}-"})
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-disposition"] == 'attachment; filename="clip.mp4"', "named after the upload"
    with cluster.client() as client:
        thumbnail = client.get("/get-video-asset", params={"videoId": video_id, "type": "thumbnail"})
    assert thumbnail.headers["content-disposition"] == 'attachment; filename="clip-thumbnail.jpg"'
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    assert beyond.status_code == 416


def test_deleting_a_video_cancels_its_jobs_and_removes_its_files(
        cluster: Cluster, long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    job_id = cluster.convert(video_id, "webm").json()["jobId"]
    ws.wait_event("job:progress", job_id)
    with cluster.client() as client:
        response = client.delete(f"/api/videos/{video_id}")
        assert response.status_code == 200 and response.json()["cancelledJobs"] == [job_id]
        ws.wait_event("job:cancelled", job_id)
        assert client.get("/api/videos").json() == []
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
        assert client.delete(f"/api/videos/{video_id}").status_code == 404
    assert not (cluster.data_dir / "storage" / video_id).exists()


def test_an_upload_over_the_limit_is_413_before_the_body_is_read(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(executors=0, extra=["--max-upload-mb", "1"])
    with cluster.client() as client:
        declared = client.post("/api/upload-video", content=b"\0" * (2 << 20), headers={"filename": "big.mp4"})
        streamed = client.post("/api/upload-video", content=iter([b"\0" * (1 << 19)] * 4),
                               headers={"filename": "big.mp4"})
    assert declared.status_code == 413 and streamed.status_code == 413
    assert not [p for p in (cluster.data_dir / "storage").rglob("*") if p.is_file()]
