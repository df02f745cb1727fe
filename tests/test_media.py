from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest

from cluster.media import (
    OUTPUT_CODECS,
    VIDEO_FORMATS,
    MediaError,
    MediaInfo,
    ProbeError,
    Progress,
    ProgressParser,
    convert_command,
    eta_seconds,
    find_ffmpeg,
    format_of,
    percent,
    probe,
    resize_command,
    run_quick,
    thumbnail_command,
)

CLIP_SECONDS = 2.0


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return find_ffmpeg()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


def _lavfi_video(seconds: float = CLIP_SECONDS) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds:g}"]


def _lavfi_audio(seconds: float = CLIP_SECONDS) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds:g}"]


@pytest.fixture(scope="module")
def clip(ffmpeg: str, media_dir: Path) -> Path:
    out = media_dir / "clip.mp4"
    _run([
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *_lavfi_video(), *_lavfi_audio(),
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(out),
    ])
    return out


@pytest.fixture(scope="module")
def silent_clip(ffmpeg: str, media_dir: Path) -> Path:
    out = media_dir / "silent.mp4"
    _run([
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *_lavfi_video(1), "-c:v", "libx264", "-preset", "ultrafast", str(out),
    ])
    return out


@pytest.fixture(scope="module")
def audio_only(ffmpeg: str, media_dir: Path) -> Path:
    out = media_dir / "tone.m4a"
    _run([
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *_lavfi_audio(1), "-c:a", "aac", str(out),
    ])
    return out


# --- find_ffmpeg -------------------------------------------------------------


def test_find_ffmpeg_default_is_executable() -> None:
    path = find_ffmpeg()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_find_ffmpeg_configured_path_is_returned(ffmpeg: str) -> None:
    assert find_ffmpeg(ffmpeg) == ffmpeg


def test_find_ffmpeg_missing_configured_path(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        find_ffmpeg(str(tmp_path / "no-such-ffmpeg"))


def test_find_ffmpeg_non_executable_configured_path(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("not a program")
    fake.chmod(0o644)
    with pytest.raises(MediaError):
        find_ffmpeg(str(fake))


# --- probe -------------------------------------------------------------------


def test_probe_clip(clip: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height) == (320, 240)
    assert info.duration_s == pytest.approx(CLIP_SECONDS, abs=0.1)
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac"
    assert info.container == "mov,mp4,m4a,3gp,3g2,mj2"
    assert info.size_bytes == clip.stat().st_size
    assert format_of(info) == "mp4"


def test_probe_accepts_str_path(clip: Path) -> None:
    assert probe(str(clip)) == probe(clip)


def test_probe_video_without_audio(silent_clip: Path) -> None:
    assert probe(silent_clip).audio_codec is None


def test_probe_text_file_raises(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(ProbeError) as exc:
        probe(text)
    assert exc.value.__cause__ is not None


def test_probe_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ProbeError):
        probe(tmp_path / "missing.mp4")


def test_probe_audio_only_raises(audio_only: Path) -> None:
    with pytest.raises(ProbeError, match="no video stream"):
        probe(audio_only)


def test_media_info_dict_round_trip(clip: Path) -> None:
    info = probe(clip)
    d = info.to_dict()
    assert set(d) == {
        "width", "height", "duration", "videoCodec", "audioCodec", "container", "sizeBytes", "frameRate",
    }
    assert MediaInfo.from_dict(d) == info


def test_media_info_from_dict_without_audio() -> None:
    d = {
        "width": 2, "height": 2, "duration": 1, "videoCodec": "vp9",
        "audioCodec": None, "container": "matroska,webm", "sizeBytes": 10,
    }
    info = MediaInfo.from_dict(d)
    assert info.audio_codec is None
    assert format_of(info) == "webm"


@pytest.mark.parametrize(
    ("container", "video_codec", "expected"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", "h264", "mp4"),
        ("matroska,webm", "vp9", "webm"),
        ("matroska,webm", "vp8", "webm"),
        ("matroska,webm", "av1", "webm"),
        ("matroska,webm", "h264", "mkv"),
        ("avi", "mpeg4", "avi"),
        ("flv", "h264", "flv"),
        ("mpegts", "h264", None),
        ("jpeg_pipe", "mjpeg", None),
    ],
)
def test_format_of(container: str, video_codec: str, expected: str | None) -> None:
    info = MediaInfo(320, 240, 1.0, video_codec, None, container, 1)
    assert format_of(info) == expected


# --- command builders --------------------------------------------------------

EXPECTED_CODECS = {
    "mp4": ("h264", "aac", "mp4"),
    "mov": ("h264", "aac", "mp4"),
    "mkv": ("h264", "aac", "mkv"),
    "flv": ("h264", "aac", "flv"),
    "webm": ("vp9", "opus", "webm"),
    "avi": ("mpeg4", "mp3", "avi"),
}


def test_output_codecs_cover_all_formats() -> None:
    assert set(OUTPUT_CODECS) == set(VIDEO_FORMATS) == set(EXPECTED_CODECS)


def test_builder_prefix_and_threads(ffmpeg: str) -> None:
    argv = convert_command(ffmpeg, "in.mp4", "out.tmp", "mkv")
    assert argv[:6] == [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    assert "-threads" not in argv
    assert argv[-3:] == ["-f", "matroska", "out.tmp"]
    threaded = resize_command(ffmpeg, "in.mp4", "out.tmp", 160, 120, "mp4", threads=2)
    assert threaded[threaded.index("-threads") + 1] == "2"
    assert "-progress" in threaded and "pipe:1" in threaded


def test_builder_rejects_unknown_format(ffmpeg: str) -> None:
    with pytest.raises(MediaError):
        convert_command(ffmpeg, "in.mp4", "out.tmp", "gif")


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_convert_each_format(ffmpeg: str, clip: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out.tmp"
    _run(convert_command(ffmpeg, clip, out, fmt))
    info = probe(out)
    video, audio, detected = EXPECTED_CODECS[fmt]
    assert (info.width, info.height) == (320, 240)
    assert (info.video_codec, info.audio_codec) == (video, audio)
    assert format_of(info) == detected
    assert info.duration_s == pytest.approx(CLIP_SECONDS, abs=0.15)


def test_convert_video_without_audio(ffmpeg: str, silent_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tmp"
    _run(convert_command(ffmpeg, silent_clip, out, "webm", threads=1))
    info = probe(out)
    assert (info.video_codec, info.audio_codec) == ("vp9", None)


def test_resize(ffmpeg: str, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tmp"
    _run(resize_command(ffmpeg, clip, out, 160, 120, "mp4", threads=1))
    info = probe(out)
    assert (info.width, info.height) == (160, 120)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def test_resize_rejects_bad_size(ffmpeg: str) -> None:
    with pytest.raises(MediaError):
        resize_command(ffmpeg, "in.mp4", "out.tmp", 0, 120, "mp4")


def test_resize_refuses_an_unknown_fit(ffmpeg: str) -> None:
    with pytest.raises(MediaError, match="unknown fit"):
        resize_command(ffmpeg, "in.mp4", "out.tmp", 160, 120, "mp4", fit="fill")


BLACK, WHITE = 40, 200  # luma thresholds


@pytest.fixture(scope="module")
def banded_clips(ffmpeg: str, media_dir: Path) -> dict[str, Path]:
    """White 320x240 with a black band in its left 40 columns: with square pixels (4:3) and with 4:3 pixels
    (a 16:9 picture stored in 320x240)."""
    clips = {}
    for name, sar in (("square", "1"), ("anamorphic", "4/3")):
        out = media_dir / f"banded-{name}.mp4"
        _run([ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi",
              "-i", "color=c=white:size=320x240:rate=10:duration=0.5",
              "-vf", f"drawbox=x=0:y=0:w=40:h=240:color=black:t=fill,setsar={sar}",
              "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)])
        clips[name] = out
    return clips


def _first_frame(path: Path) -> tuple[int, int, object, Callable[[int, int], int]]:
    """Width, height, sample aspect ratio of the stream, and the luma at (x, y) of the first frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        frame = next(container.decode(stream)).reformat(format="yuv420p")
        plane = frame.planes[0]
        luma, stride = bytes(plane), plane.line_size
        return frame.width, frame.height, sar, lambda x, y: luma[y * stride + x]


@pytest.mark.parametrize(("source", "fit", "size", "black", "white"), [
    # letterbox: bars above and below, the band scaled to 30 columns
    ("square", "contain", (240, 240), [(120, 5), (120, 234), (5, 120)], [(120, 120), (200, 40)]),
    # pillarbox: bars of 80 columns left (then the band) and right
    ("square", "contain", (480, 240), [(20, 120), (100, 120), (460, 120)], [(240, 120), (200, 5), (390, 120)]),
    # crop: 320x240 cut to its middle 240 columns, the band gone
    ("square", "cover", (240, 240), [], [(5, 120), (120, 5), (234, 234)]),
    # stretch: the whole picture, squeezed; band 30 columns
    ("square", "stretch", (240, 240), [(5, 120)], [(120, 5), (120, 234)]),
    # a 16:9 picture fills 320x180 exactly: no bars, band 40 columns
    ("anamorphic", "contain", (320, 180), [(5, 90)], [(160, 2), (160, 177), (60, 90)]),
    # 16:9 into a square: the middle, band cut off
    ("anamorphic", "cover", (240, 240), [], [(5, 120), (120, 5)]),
])
def test_resize_fits_keep_square_pixels(ffmpeg: str, banded_clips: dict[str, Path], tmp_path: Path, source: str,
                                        fit: str, size: tuple[int, int], black: list[tuple[int, int]],
                                        white: list[tuple[int, int]]) -> None:
    out = tmp_path / "out.mp4"
    _run(resize_command(ffmpeg, banded_clips[source], out, *size, "mp4", threads=1, fit=fit))
    width, height, sar, luma = _first_frame(out)
    assert (width, height) == size
    assert sar in (None, Fraction(1, 1)), f"pixels are {sar}, not square"
    assert [luma(x, y) < BLACK for x, y in black] == [True] * len(black)
    assert [luma(x, y) > WHITE for x, y in white] == [True] * len(white)


def test_thumbnail(ffmpeg: str, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "thumb.tmp"
    at_s = min(1.0, probe(clip).duration_s / 2)
    asyncio.run(run_quick(thumbnail_command(ffmpeg, clip, out, at_s), timeout_s=30))
    assert out.read_bytes()[:2] == b"\xff\xd8"
    info = probe(out)
    assert (info.width, info.height) == (320, 240)
    assert info.video_codec == "mjpeg"


# --- run_quick ---------------------------------------------------------------


def test_run_quick_failure_reports_stderr(ffmpeg: str, tmp_path: Path) -> None:
    argv = thumbnail_command(ffmpeg, tmp_path / "missing.mp4", tmp_path / "t.tmp", 0.0)
    with pytest.raises(MediaError, match="No such file"):
        asyncio.run(run_quick(argv, timeout_s=30))


def test_run_quick_timeout_kills(ffmpeg: str) -> None:
    endless = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5", "-f", "null", "-",
    ]
    with pytest.raises(MediaError, match="timed out"):
        asyncio.run(run_quick(endless, timeout_s=0.3))


def test_run_quick_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        asyncio.run(run_quick([str(tmp_path / "nope")], timeout_s=5))


# --- progress ----------------------------------------------------------------


def test_progress_parser_on_real_output(ffmpeg: str, clip: Path, tmp_path: Path) -> None:
    # Upscaling on one thread is slow enough to yield several 0.1 s progress blocks.
    argv = resize_command(ffmpeg, clip, tmp_path / "out.tmp", 1280, 720, "mp4", threads=1)
    result = _run(argv)
    parser = ProgressParser()
    updates = [p for line in result.stdout.splitlines() if (p := parser.feed(line))]
    assert len(updates) >= 2
    times = [p.out_time_s for p in updates]
    assert times == sorted(times)
    assert times[0] < times[-1]
    assert [p.done for p in updates] == [False] * (len(updates) - 1) + [True]
    assert updates[-1].out_time_s == pytest.approx(CLIP_SECONDS, abs=0.15)
    assert percent(updates[-1], CLIP_SECONDS) == 100.0


def _feed_block(parser: ProgressParser, lines: list[str]) -> list[Progress]:
    return [p for line in lines if (p := parser.feed(line))]


def test_progress_parser_block() -> None:
    parser = ProgressParser()
    got = _feed_block(parser, [
        "frame=10\n", "bitrate= 262.1kbits/s\n", "out_time_us=500000\n",
        "out_time=00:00:00.500000\n", "speed=12.3x\n", "progress=continue\n",
    ])
    assert got == [Progress(out_time_s=0.5, speed=12.3, done=False)]


def test_progress_parser_na_and_negative() -> None:
    parser = ProgressParser()
    first = _feed_block(parser, ["out_time_us=-9223372036854775807", "speed=N/A", "progress=continue"])
    assert first == [Progress(0.0, None, False)]
    second = _feed_block(parser, ["out_time_us=1500000", "speed=  2x", "progress=continue"])
    assert second == [Progress(1.5, 2.0, False)]
    # N/A mid-stream keeps the last known position.
    third = _feed_block(parser, ["out_time_us=N/A", "speed=N/A", "progress=end"])
    assert third == [Progress(1.5, None, True)]


def test_progress_parser_never_goes_backwards() -> None:
    # ffmpeg 9 reports queued audio ahead of a buffering video encoder, then drops back.
    parser = ProgressParser()
    _feed_block(parser, ["out_time_us=1800000", "progress=continue"])
    got = _feed_block(parser, ["out_time_us=920000", "speed=1.8x", "progress=continue"])
    assert got == [Progress(1.8, 1.8, False)]


def test_progress_parser_ignores_noise() -> None:
    parser = ProgressParser()
    assert parser.feed("") is None
    assert parser.feed("garbage without equals") is None
    assert parser.feed("out_time_us=100") is None


@pytest.mark.parametrize(
    ("progress", "duration", "expected"),
    [
        (Progress(0.0, None, False), 2.0, 0.0),
        (Progress(1.0, 1.0, False), 2.0, 50.0),
        (Progress(1.0, 1.0, False), 3.0, 33.3),
        (Progress(2.0, 1.0, False), 3.0, 66.7),
        (Progress(5.0, 1.0, False), 2.0, 100.0),
        (Progress(-1.0, 1.0, False), 2.0, 0.0),
        (Progress(0.5, 1.0, False), 0.0, 0.0),
        (Progress(0.5, 1.0, True), 2.0, 100.0),
        (Progress(0.0, None, True), 0.0, 100.0),
    ],
)
def test_percent(progress: Progress, duration: float, expected: float) -> None:
    assert percent(progress, duration) == expected


@pytest.mark.parametrize(
    ("progress", "duration", "expected"),
    [
        (Progress(0.0, 2.0, False), 10.0, 5.0),
        (Progress(4.0, 2.0, False), 10.0, 3.0),
        (Progress(12.0, 2.0, False), 10.0, 0.0),
        (Progress(1.0, None, False), 10.0, None),
        (Progress(1.0, 0.0, False), 10.0, None),
        (Progress(1.0, 2.0, False), 0.0, None),
        (Progress(1.0, None, True), 10.0, 0.0),
    ],
)
def test_eta_seconds(progress: Progress, duration: float, expected: float | None) -> None:
    got = eta_seconds(progress, duration)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
