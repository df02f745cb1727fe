"""workers.executor.jobs.execute, called directly: real ffmpeg, real storage, tiny generated clips."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import psutil
import pytest

from cluster.hls import HLS_AUDIO, HLS_PLAYLIST, read_media_playlist
from cluster.media import find_ffmpeg, probe
from cluster.storage import LocalStorage
from tests.harness import generate_clip
from workers.executor.jobs import NO_AUDIO, JobFailure, execute

VIDEO_ID = "v1"
LADDER = [240, 360, 720, 1080]
STREAM_INF = re.compile(r'#EXT-X-STREAM-INF:BANDWIDTH=(\d+),.*RESOLUTION=(\d+)x(\d+),CODECS="([^"]+)"')


@dataclass(frozen=True)
class Run:
    """What one execute() call gave, and what the counting ffmpeg wrapper saw."""
    result: dict[str, Any]
    storage: LocalStorage
    source: Path
    ffmpeg_calls: list[list[str]]
    progress: list[float]

    @property
    def hls_dir(self) -> Path:
        return self.storage.hls_dir(VIDEO_ID)


def _ffmpeg_gen(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, timeout=60)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def clip_720p(clips: Path) -> Path:
    """4 s, 1280x720, AAC audio."""
    return generate_clip(clips / "720p.mp4", seconds=4, size="1280x720")


@pytest.fixture(scope="module")
def silent_720p(clips: Path) -> Path:
    """4 s, 1280x720, no audio."""
    return generate_clip(clips / "silent.mp4", seconds=4, size="1280x720", audio=False)


@pytest.fixture(scope="module")
def small_opus(clips: Path) -> Path:
    """2 s, 320x240, Opus audio in Matroska: audio that must be encoded to become AAC."""
    out = clips / "small.mkv"
    _ffmpeg_gen("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
                "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libopus", "-shortest", str(out))
    return out


@pytest.fixture(scope="module")
def long_clip(clips: Path) -> Path:
    """Long enough that an HLS job is still running well after its first progress report."""
    return generate_clip(clips / "long.mp4", seconds=30, size="640x360")


def counting_ffmpeg(tmp_path: Path) -> tuple[str, Path]:
    """An ffmpeg that logs each argv (one argument per line, a blank line after) before running the real one."""
    log = tmp_path / "ffmpeg-calls.log"
    script = tmp_path / "counting-ffmpeg"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{log}"\necho >> "{log}"\nexec "{find_ffmpeg()}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def ffmpeg_calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [block.splitlines() for block in log.read_text().split("\n\n") if block.strip()]


def store(root: Path, clip: Path) -> tuple[LocalStorage, dict[str, Any]]:
    """A storage holding `clip` as the original of VIDEO_ID, and the stored video record."""
    storage = LocalStorage(root / "storage")
    storage.prepare()
    fmt = clip.suffix.lstrip(".")
    original = storage.original(VIDEO_ID, fmt)
    original.parent.mkdir(parents=True)
    shutil.copyfile(clip, original)
    return storage, {"videoId": VIDEO_ID, "name": clip.name, "info": {**probe(clip).to_dict(), "format": fmt}}


def payload(job_type: str, video: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": job_type, "videoId": VIDEO_ID, "params": params or {}, "timeoutS": 60, "threads": 2,
            "video": video}


def run_job(root: Path, clip: Path, job_type: str, params: dict[str, Any] | None = None) -> Run:
    storage, video = store(root, clip)
    ffmpeg, log = counting_ffmpeg(root)
    progress: list[float] = []
    result = asyncio.run(execute(payload(job_type, video, params), storage, ffmpeg,
                                 lambda pct, _speed, _eta: progress.append(pct)))
    return Run(result, storage, storage.original(VIDEO_ID, video["info"]["format"]), ffmpeg_calls(log), progress)


def failure(root: Path, clip: Path, job_type: str, params: dict[str, Any] | None = None,
            ffmpeg: str | None = None) -> JobFailure:
    storage, video = store(root, clip)
    with pytest.raises(JobFailure) as exc:
        asyncio.run(execute(payload(job_type, video, params), storage, ffmpeg or find_ffmpeg(), lambda *_: None))
    return exc.value


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def hidden_leftovers(storage: LocalStorage) -> list[str]:
    return sorted(p.name for p in storage.video_dir(VIDEO_ID).iterdir() if p.name.startswith("."))


# --- extract-audio -------------------------------------------------------------


def test_extract_audio_copies_aac(tmp_path: Path, clip_720p: Path) -> None:
    run = run_job(tmp_path, clip_720p, "extract-audio")
    output = run.storage.audio(VIDEO_ID)
    url = f"/get-video-asset?videoId={VIDEO_ID}&type=audio"
    assert run.result == {"file": "audio.aac", "url": url,
                          "size": output.stat().st_size, "audioCodec": "aac", "duration": run.result["duration"],
                          "outputs": [{"name": "audio.aac", "url": url, "contentType": "audio/aac",
                                       "size": output.stat().st_size}]}
    assert run.result["duration"] == pytest.approx(probe(clip_720p).duration_s, abs=0.1)
    copied, source = audio_packets(output), audio_packets(clip_720p)
    # Bit-exact: each ADTS frame is the source's AAC frame behind a 7-byte ADTS header.
    assert len(copied) == len(source)
    assert all(c[7:] == s for c, s in zip(copied, source, strict=True))
    assert run.ffmpeg_calls[0][run.ffmpeg_calls[0].index("-c:a") + 1] == "copy"
    assert hidden_leftovers(run.storage) == []


def test_extract_audio_encodes_other_codecs(tmp_path: Path, small_opus: Path) -> None:
    run = run_job(tmp_path, small_opus, "extract-audio")
    assert run.result["audioCodec"] == "aac"
    assert run.result["duration"] == pytest.approx(probe(small_opus).duration_s, abs=0.1)
    with av.open(str(run.storage.audio(VIDEO_ID))) as container:
        assert container.format.name == "aac" and not container.streams.video
    assert run.ffmpeg_calls[0][run.ffmpeg_calls[0].index("-c:a") + 1] == "aac"


def test_extract_audio_without_audio_is_permanent(tmp_path: Path, silent_720p: Path) -> None:
    ffmpeg, log = counting_ffmpeg(tmp_path)
    error = failure(tmp_path, silent_720p, "extract-audio", ffmpeg=ffmpeg)
    assert (str(error), error.permanent) == (NO_AUDIO, True)
    assert ffmpeg_calls(log) == []


def test_an_unknown_kind_is_permanent(tmp_path: Path, silent_720p: Path) -> None:
    ffmpeg, log = counting_ffmpeg(tmp_path)
    error = failure(tmp_path, silent_720p, "sharpen", ffmpeg=ffmpeg)
    assert error.permanent and str(error).startswith("invalid parameters: unknown job type 'sharpen': one of resize")
    assert ffmpeg_calls(log) == []


# --- resize and convert ---------------------------------------------------------------


def _reads_local_files_with_its_demuxer(argv: list[str], demuxer: str) -> bool:
    i = argv.index("-i")
    return argv[i - 4:i] == ["-protocol_whitelist", "file", "-f", demuxer]


def test_resize_contains_by_default_and_reads_only_the_source(tmp_path: Path, small_opus: Path) -> None:
    run = run_job(tmp_path, small_opus, "resize", {"width": 160, "height": 160})
    assert run.result["file"] == "160x160.mkv"
    assert (run.result["width"], run.result["height"]) == (160, 160)
    with av.open(str(run.storage.resized(VIDEO_ID, 160, 160, "mkv"))) as container:
        assert container.streams.video[0].sample_aspect_ratio in (None, 1)
    [argv] = run.ffmpeg_calls
    assert "pad=160:160" in argv[argv.index("-vf") + 1]
    assert _reads_local_files_with_its_demuxer(argv, "matroska")
    assert hidden_leftovers(run.storage) == []


def test_a_later_fit_of_the_same_size_replaces_the_file(tmp_path: Path, small_opus: Path) -> None:
    storage, video = store(tmp_path, small_opus)
    for fit in ("contain", "cover"):
        result = asyncio.run(execute(payload("resize", video, {"width": 160, "height": 160, "fit": fit}), storage,
                                     find_ffmpeg(), lambda *_: None))
        assert result["file"] == "160x160.mkv"
    assert sorted(p.name for p in storage.video_dir(VIDEO_ID).iterdir()) == ["160x160.mkv", "original.mkv"]


@pytest.mark.parametrize(("job_type", "params"), [("convert", {"format": "mp4"}), ("extract-audio", {})])
def test_every_input_is_local_and_demuxed_as_its_format(tmp_path: Path, small_opus: Path, job_type: str,
                                                        params: dict[str, Any]) -> None:
    run = run_job(tmp_path, small_opus, job_type, params)
    assert [_reads_local_files_with_its_demuxer(argv, "matroska") for argv in run.ffmpeg_calls] == [True]


# --- hls ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory: pytest.TempPathFactory, clip_720p: Path) -> Run:
    return run_job(tmp_path_factory.mktemp("hls"), clip_720p, "hls", {"renditions": LADDER})


def _stream_infs(master: Path) -> list[tuple[int, int, int, str]]:
    return [(int(b), int(w), int(h), c) for b, w, h, c in STREAM_INF.findall(master.read_text())]


def test_hls_result_and_master_playlist(ladder_run: Run) -> None:
    master = ladder_run.hls_dir / "master.m3u8"
    text = master.read_text()
    assert text.startswith("#EXTM3U\n")
    infs = _stream_infs(master)
    assert text.count("#EXT-X-STREAM-INF:") == len(infs) == 3
    assert [(w, h) for _, w, h, _ in infs] == [(426, 240), (640, 360), (1280, 720)]
    assert all(re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", codecs) for *_, codecs in infs)
    assert text.count('AUDIO="audio"') == 3 and text.count("#EXT-X-MEDIA:TYPE=AUDIO") == 1
    assert ladder_run.result == {
        "master": "hls/master.m3u8", "url": f"/hls/{VIDEO_ID}/master.m3u8",
        "renditions": [{"height": h, "width": w, "bandwidth": b} for b, w, h, _ in infs],
        "outputs": [{"name": name, "url": f"/hls/{VIDEO_ID}/{name}", "contentType": "application/vnd.apple.mpegurl",
                     "size": (ladder_run.hls_dir / name).stat().st_size}
                    for name in ["master.m3u8", "240p/index.m3u8", "360p/index.m3u8", "720p/index.m3u8",
                                 "audio/index.m3u8"]],
    }
    assert ladder_run.progress[-1] == 100.0


def test_hls_bandwidth_covers_the_peak_segment_with_audio(ladder_run: Run) -> None:
    audio = read_media_playlist(ladder_run.hls_dir / HLS_AUDIO / HLS_PLAYLIST)
    audio_peak = max(8 * s.size_bytes / s.duration_s for s in audio)
    for bandwidth, _, height, _ in _stream_infs(ladder_run.hls_dir / "master.m3u8"):
        segments = read_media_playlist(ladder_run.hls_dir / f"{height}p" / HLS_PLAYLIST)
        assert bandwidth >= max(8 * s.size_bytes / s.duration_s for s in segments) + audio_peak - 1


def test_hls_segments_exist_with_the_right_size_and_duration(ladder_run: Run) -> None:
    source = probe(ladder_run.source)
    for rendition in ladder_run.result["renditions"]:
        assert rendition["height"] <= source.height
        playlist = ladder_run.hls_dir / f"{rendition['height']}p" / HLS_PLAYLIST
        segments = read_media_playlist(playlist)  # raises if one is missing
        assert segments
        assert sum(s.duration_s for s in segments) == pytest.approx(source.duration_s, abs=1.0)
        with av.open(str(playlist.parent / segments[0].uri)) as container:
            video = container.streams.video[0].codec_context
            assert (video.width, video.height) == (rendition["width"], rendition["height"])
    audio = read_media_playlist(ladder_run.hls_dir / HLS_AUDIO / HLS_PLAYLIST)
    assert sum(s.duration_s for s in audio) == pytest.approx(source.duration_s, abs=1.0)


def test_hls_runs_one_ffmpeg_encoding_audio_once(ladder_run: Run) -> None:
    assert len(ladder_run.ffmpeg_calls) == 1
    argv = ladder_run.ffmpeg_calls[0]
    assert _reads_local_files_with_its_demuxer(argv, "mov")
    assert argv.count("-i") == 1 and argv.count("-c:a") == 1
    assert argv.count("-map") == 4  # three scaled videos and the one audio stream


def test_hls_leaves_nothing_half_written(ladder_run: Run) -> None:
    assert hidden_leftovers(ladder_run.storage) == []
    assert sorted(p.name for p in ladder_run.hls_dir.iterdir()) == ["240p", "360p", "720p", "audio", "master.m3u8"]


def test_hls_ladder_plays_back(ladder_run: Run) -> None:
    subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-xerror",
                    "-i", str(ladder_run.hls_dir / "master.m3u8"), "-map", "0", "-f", "null", "-"], check=True, timeout=60)


def test_hls_without_audio(tmp_path: Path, silent_720p: Path) -> None:
    run = run_job(tmp_path, silent_720p, "hls", {"renditions": [240, 360]})
    text = (run.hls_dir / "master.m3u8").read_text()
    assert [(w, h) for _, w, h, _ in _stream_infs(run.hls_dir / "master.m3u8")] == [(426, 240), (640, 360)]
    assert "AUDIO" not in text and "mp4a" not in text
    assert not (run.hls_dir / HLS_AUDIO).exists()
    assert "-c:a" not in run.ffmpeg_calls[0]
    subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-xerror",
                    "-i", str(run.hls_dir / "master.m3u8"), "-map", "0", "-f", "null", "-"], check=True, timeout=60)


def test_hls_replaces_an_older_ladder(tmp_path: Path, small_opus: Path) -> None:
    storage, video = store(tmp_path, small_opus)
    old = storage.hls_dir(VIDEO_ID) / "480p"
    old.mkdir(parents=True)
    (old / "index.m3u8").write_text("#EXTM3U\n")
    result = asyncio.run(execute(payload("hls", video, {"renditions": [240]}), storage, find_ffmpeg(),
                                 lambda *_: None))
    assert [r["height"] for r in result["renditions"]] == [240]
    assert sorted(p.name for p in storage.hls_dir(VIDEO_ID).iterdir()) == ["240p", "audio", "master.m3u8"]
    assert hidden_leftovers(storage) == []


def test_hls_where_no_rendition_fits_is_permanent(tmp_path: Path, small_opus: Path) -> None:
    ffmpeg, log = counting_ffmpeg(tmp_path)
    error = failure(tmp_path, small_opus, "hls", {"renditions": [360, 720]}, ffmpeg=ffmpeg)
    assert error.permanent and str(error).startswith("invalid parameters: no rendition")
    assert ffmpeg_calls(log) == []


def test_hls_cancelled_mid_run_leaves_no_partial_directory_and_no_ffmpeg(tmp_path: Path, long_clip: Path) -> None:
    storage, video = store(tmp_path, long_clip)

    async def main() -> None:
        progressed = asyncio.Event()
        task = asyncio.create_task(execute(payload("hls", video, {"renditions": [240, 360]}), storage,
                                           find_ffmpeg(), lambda *_: progressed.set()))
        await asyncio.wait_for(progressed.wait(), 30)
        assert not task.done()
        assert [p.name for p in storage.video_dir(VIDEO_ID).glob(".hls.*.part") if p.is_dir()], "a partial ladder"
        assert ffmpeg_reading(storage), "ffmpeg runs"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert hidden_leftovers(storage) == []
    assert not storage.hls_dir(VIDEO_ID).exists()
    assert ffmpeg_reading(storage) == []


def ffmpeg_reading(storage: LocalStorage) -> list[psutil.Process]:
    """Our live descendants whose command line names a file of `storage`."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE and str(storage.root) in " ".join(process.cmdline()):
                found.append(process)
    return found


# --- error classification --------------------------------------------------------------


def test_an_unreadable_input_is_permanent(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    original = storage.original(VIDEO_ID, "mp4")
    original.parent.mkdir(parents=True)
    original.write_text("not a video\n" * 100)
    video = {"videoId": VIDEO_ID, "name": "x.mp4",
             "info": {"width": 320, "height": 240, "duration": 2.0, "videoCodec": "h264", "audioCodec": "aac",
                      "container": "mov,mp4,m4a,3gp,3g2,mj2", "sizeBytes": 1200, "format": "mp4"}}
    with pytest.raises(JobFailure) as exc:
        asyncio.run(execute(payload("hls", video, {"renditions": [240]}), storage, find_ffmpeg(), lambda *_: None))
    assert exc.value.permanent and str(exc.value).startswith("unreadable input: ")
    assert "'original.mp4'" in str(exc.value) and str(tmp_path) not in str(exc.value), "no server path"


def test_a_missing_source_is_permanent(tmp_path: Path, small_opus: Path) -> None:
    storage, video = store(tmp_path, small_opus)
    storage.original(VIDEO_ID, "mkv").unlink()
    with pytest.raises(JobFailure, match="source missing") as exc:
        asyncio.run(execute(payload("extract-audio", video), storage, find_ffmpeg(), lambda *_: None))
    assert exc.value.permanent


@pytest.mark.parametrize(("job_type", "params"), [
    ("thumbnail-of-doom", {}),
    ("resize", {"width": "wide", "height": 120}),
    ("convert", {"format": "gif"}),
    ("hls", {"renditions": [250]}),
    ("hls", {"renditions": [540]}),  # no such rendition, whatever the source's height
    ("resize", {"width": 160, "height": 120, "fit": "fill"}),
])
def test_invalid_parameters_are_permanent(tmp_path: Path, small_opus: Path, job_type: str,
                                          params: dict[str, Any]) -> None:
    error = failure(tmp_path, small_opus, job_type, params)
    assert error.permanent and str(error).startswith("invalid parameters: ")


def test_an_impossible_output_is_permanent(tmp_path: Path, small_opus: Path) -> None:
    error = failure(tmp_path, small_opus, "resize", {"width": 161, "height": 121, "fit": "stretch"})  # x264: even sizes
    assert error.permanent and str(error).startswith("impossible output: ")
    assert "Error while opening encoder" in error.stderr_tail
    assert hidden_leftovers(LocalStorage(tmp_path / "storage")) == []


def _failing_ffmpeg(tmp_path: Path, body: str) -> str:
    script = tmp_path / "failing-ffmpeg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize("body", [
    'echo "Error writing trailer: No space left on device" >&2; exit 1',
    'echo "Error while opening encoder" >&2; kill -SEGV $$',  # a crash is retried whatever the log says
])
def test_other_ffmpeg_failures_are_transient(tmp_path: Path, small_opus: Path, body: str) -> None:
    error = failure(tmp_path, small_opus, "convert", {"format": "mp4"}, ffmpeg=_failing_ffmpeg(tmp_path, body))
    assert not error.permanent
    assert not str(error).startswith("impossible output")


def test_partial_ladders_left_by_a_dead_executor_are_swept(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    storage.prepare()
    for leftover in (".hls.part/240p", ".hls.0123abcd.old.part/360p"):
        (storage.video_dir(VIDEO_ID) / leftover).mkdir(parents=True)
        (storage.video_dir(VIDEO_ID) / leftover / "seg_000.ts").write_bytes(b"x")
    storage.hls_dir(VIDEO_ID).mkdir()
    assert storage.sweep_partials() == 2
    assert hidden_leftovers(storage) == []
    assert storage.hls_dir(VIDEO_ID).is_dir()
