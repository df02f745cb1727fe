"""Resource bombs and leaks (issue 11, items 2, 6, 8): sources capped at probe before any ffmpeg, playlists
and lists of files refused, jobs bounded by their work, high priority and ffmpeg details for administrators."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from cluster.media import SourceLimits, SourceRefused, find_ffmpeg, probe_source
from tests.harness import Cluster, EventClient, generate_clip

USER = ("ann", "ann-password-123")
HLS_PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nother.ts\n#EXT-X-ENDLIST\n"


def _ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, timeout=120)


def lavfi_clip(path: Path, source: str) -> Path:
    _ffmpeg("-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            str(path))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits")


@pytest.fixture(scope="module")
def concat_list(clips: Path) -> Path:
    """A real concat list, named as a video, that makes whoever opens it read another file beside it."""
    generate_clip(clips / "other.mp4", seconds=1, size="160x120")
    listing = clips / "list.mp4"
    listing.write_text("ffconcat version 1.0\nfile 'other.mp4'\n")
    return listing


def logging_ffmpeg(tmp_path: Path, fail_on: str = "") -> tuple[Path, Path]:
    """An ffmpeg that logs each run; a command containing ``fail_on`` fails naming its output's full path."""
    log = tmp_path / "ffmpeg-runs.log"
    script = tmp_path / "logging-ffmpeg"
    failing = (f'case "$*" in *{fail_on}*) for last; do :; done; echo "cannot write $last" >&2; exit 1;; esac\n'
               if fail_on else "")
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{failing}exec "{find_ffmpeg()}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def stored_files(cluster: Cluster) -> list[str]:
    root = cluster.data_dir / "storage"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def upload(client: httpx.Client, body: bytes, name: str = "clip.mp4") -> httpx.Response:
    return client.post("/api/upload-video", content=body, headers={"filename": name})


# --- probe ---------------------------------------------------------------------------------


def test_a_frame_past_8k_is_refused_by_default(clips: Path) -> None:
    big = lavfi_clip(clips / "big.mp4", "color=c=gray:size=8192x4320:rate=1:duration=1")
    with pytest.raises(SourceRefused, match=r"8192x4320 \(35389440 pixels\): the limit is 33177600 pixels"):
        probe_source(big, SourceLimits())


def test_a_decompression_bomb_is_refused_without_decoding_its_frame(clips: Path) -> None:
    """The issue's 390 KB 11520x11520 upload: probing it decoded a 200 MB frame (352 MB peak) before."""
    bomb = lavfi_clip(clips / "bomb.mp4", "color=c=gray:size=11520x11520:rate=1:duration=1")
    assert bomb.stat().st_size < 1024 * 1024
    # VmHWM, the peak of this process's own memory: Linux carries the forking parent's peak into ru_maxrss
    # across exec, and the pytest process passes 200 MB in a full run
    script = ("import re, sys\n"
              "from cluster.media import SourceLimits, SourceRefused, probe_source\n"
              "try:\n    probe_source(sys.argv[1], SourceLimits())\n"
              "except SourceRefused as e:\n    print(e)\n"
              "status = open('/proc/self/status').read()\n"
              "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1]) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, check=True,
                          timeout=60)
    refusal, peak_mb = done.stdout.splitlines()
    assert "11520x11520 (132710400 pixels): the limit is 33177600 pixels" in refusal
    assert int(peak_mb) < 200, f"{peak_mb} MB to probe a bomb"


def test_a_concat_list_is_refused_though_it_would_open(concat_list: Path) -> None:
    with av.open(str(concat_list)) as container:  # what the guard is for: unguarded, it reads other.mp4
        assert container.format.name == "concat" and container.streams.video[0].width == 160
    with pytest.raises(SourceRefused, match="'list.mp4' is a concat list: playlists and lists of other files"):
        probe_source(concat_list)


def test_an_hls_playlist_is_refused(tmp_path: Path) -> None:
    playlist = tmp_path / "playlist.mkv"
    playlist.write_bytes(HLS_PLAYLIST)
    with pytest.raises(SourceRefused, match="is an HLS playlist"):
        probe_source(playlist)


# --- uploads -------------------------------------------------------------------------------


def test_uploads_past_a_limit_or_listing_files_are_415_before_any_ffmpeg(
        cluster_factory: Callable[..., Cluster], clips: Path, concat_list: Path, tmp_path: Path) -> None:
    ffmpeg, log = logging_ffmpeg(tmp_path)
    cluster = cluster_factory(workers=1, executors=0, extra=[
        "--ffmpeg", str(ffmpeg), "--max-source-pixels", "50000", "--max-source-fps", "30",
        "--max-source-duration-s", "3"])
    refused = {
        "the limit is 50000 pixels per frame": generate_clip(clips / "wide.mp4", seconds=1, size="320x240"),
        "frame rate is 60 fps: the limit is 30 fps": lavfi_clip(clips / "fast.mp4",
                                                                "testsrc2=size=160x120:rate=60:duration=1"),
        "lasts 4 s: the limit is 3 s": generate_clip(clips / "long.mp4", seconds=4, size="160x120"),
        "is a concat list": concat_list,
    }
    with cluster.client() as client:
        for reason, path in refused.items():
            response = upload(client, path.read_bytes())
            assert response.status_code == 415, response.text
            error = response.json()["error"]
            assert error.startswith("video refused: ") and reason in error, error
            assert str(cluster.data_dir) not in error and ".part" not in error
        playlist = upload(client, HLS_PLAYLIST, "playlist.mkv")
        assert playlist.status_code == 415 and "HLS playlist" in playlist.json()["error"]
        assert runs(log) == [], "no thumbnail ffmpeg for a refused upload"
        assert stored_files(cluster) == [], "temp files removed"

        accepted = upload(client, generate_clip(clips / "small.mp4", seconds=1, size="160x120").read_bytes())
        assert accepted.status_code == 201, accepted.text
    [thumbnail] = runs(log)
    assert "-protocol_whitelist file -f mov -i" in thumbnail


# --- jobs ----------------------------------------------------------------------------------


@pytest.fixture
def user_cluster(cluster_factory: Callable[..., Cluster], tmp_path: Path) -> tuple[Cluster, str]:
    ffmpeg, _log = logging_ffmpeg(tmp_path, fail_on="pad=96:72")
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg), "--max-job-work", "1500000",
                                                "--job-policies", "resize:retries=0"])
    cluster.add_user(*USER)
    return cluster, cluster.login(*USER)


def test_job_requests_that_cannot_or_may_not_run_are_refused_at_once(user_cluster: tuple[Cluster, str],
                                                                    clips: Path) -> None:
    cluster, token = user_cluster
    with cluster.client(token) as ann:
        video_id = upload(ann, generate_clip(clips / "hd.mp4", seconds=1, size="1280x720").read_bytes()).json()[
            "videoId"]

        def resize(**body: Any) -> httpx.Response:
            return ann.put("/api/video/resize", json={"videoId": video_id, **body})

        too_big = resize(width=1920, height=1080)  # 2073600 pixels x 1 s
        assert too_big.status_code == 400 and "the job is too large" in too_big.json()["error"]
        assert resize(width=16, height=14).status_code == 400
        assert resize(width=320, height=240, fit="fill").status_code == 400
        high = resize(width=320, height=240, priority="high")
        assert (high.status_code, high.json()) == (403, {"error": "priority high is for administrators"})
        hls = ann.post("/api/video/hls", params={"videoId": video_id}, json={"renditions": [540]})
        assert hls.status_code == 400 and "unsupported rendition height 540" in hls.json()["error"]
        # the work of a ladder is that of all its renditions: 1.66e6 here, 720p alone 0.92e6
        ladder = ann.post("/api/video/hls", params={"videoId": video_id}, json={"renditions": [240, 360, 480, 720]})
        assert ladder.status_code == 400 and "too large" in ladder.json()["error"]
        assert ann.get("/api/jobs").json() == [], "nothing was queued"
        assert ann.post("/api/video/hls", params={"videoId": video_id}, json={"renditions": [720]}).status_code == 202
        assert resize(width=320, height=240, priority="low").status_code == 202
    assert cluster.resize(video_id, 320, 180, priority="high").status_code == 202, "administrators may"


def test_failures_name_no_server_path_and_ffmpeg_details_are_for_administrators(
        user_cluster: tuple[Cluster, str], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster, token = user_cluster
    ws = ws_factory(cluster)
    with cluster.client(token) as ann:
        video_id = upload(ann, clip.read_bytes()).json()["videoId"]
        job_id = ann.put("/api/video/resize", json={"videoId": video_id, "width": 96, "height": 72}).json()["jobId"]
        dead = ws.wait_event("job:permanent-failure", job_id)["data"]
        assert dead["error"] == "ffmpeg exited with code 1"
        assert ann.get(f"/api/jobs/{job_id}").json()["error"] == "ffmpeg exited with code 1"
        [letter] = ann.get("/api/queue/dead-letter").json()
    [attempt] = letter["attemptsDetail"]
    assert set(attempt) == {"attempt", "executor", "startedAt", "endedAt", "outcome", "error"}
    assert str(cluster.data_dir) not in str(letter)
    with cluster.client() as admin:
        [seen] = admin.get("/api/queue/dead-letter").json()[0]["attemptsDetail"]
    assert "pad=96:72" in seen["command"] and "original.mp4" in seen["command"]
    assert seen["stderrTail"].startswith("cannot write ") and str(cluster.data_dir.name) in seen["stderrTail"]
