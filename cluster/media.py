"""ffmpeg/PyAV helpers: locate ffmpeg, probe files, build commands, parse progress."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg

VIDEO_FORMATS = ("mp4", "mov", "avi", "webm", "mkv", "flv")

# veryfast at CRF 21 matches the quality of x264's default (medium) at CRF 23 in a third of the time:
# on bench/encode_bench.py's clip, 0.3 VMAF points lower for 9 % more bits; CRF 23 lost 2.4 points.
_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-pix_fmt", "yuv420p"]
_FASTSTART = ["-movflags", "+faststart"]
_AAC = ["-c:a", "aac", "-b:a", "128k"]
_AAC_EXTRACT = ["-c:a", "aac", "-b:a", "160k"]

OUTPUT_CODECS: dict[str, tuple[list[str], list[str]]] = {
    "mp4": ([*_X264, *_FASTSTART], _AAC),
    "mov": ([*_X264, *_FASTSTART], _AAC),
    "mkv": (_X264, _AAC),
    # FLV only supports 44100/22050/11025 Hz audio.
    "flv": (_X264, [*_AAC, "-ar", "44100"]),
    "webm": (
        [
            "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
            "-row-mt", "1", "-crf", "32", "-b:v", "0",
        ],
        ["-c:a", "libopus", "-b:a", "96k"],
    ),
    "avi": (["-c:v", "mpeg4", "-q:v", "4"], ["-c:a", "libmp3lame", "-q:a", "4"]),
}

# ffmpeg muxer names; always passed with -f because outputs go to temp names.
MUXERS: dict[str, str] = {
    "mp4": "mp4",
    "mov": "mov",
    "avi": "avi",
    "webm": "webm",
    "mkv": "matroska",
    "flv": "flv",
}

_WEBM_VIDEO_CODECS = frozenset({"vp8", "vp9", "av1"})
_BASE_ARGS = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
_PROGRESS_ARGS = ["-progress", "pipe:1", "-nostats", "-stats_period", "0.1"]
_STDERR_TAIL_LINES = 5


class MediaError(Exception):
    """An ffmpeg-related failure."""


class ProbeError(MediaError):
    """The file is not a readable video."""


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    container: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "duration": self.duration_s,
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "container": self.container,
            "sizeBytes": self.size_bytes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MediaInfo:
        audio = d.get("audioCodec")
        return cls(
            width=int(d["width"]),
            height=int(d["height"]),
            duration_s=float(d["duration"]),
            video_codec=str(d["videoCodec"]),
            audio_codec=None if audio is None else str(audio),
            container=str(d["container"]),
            size_bytes=int(d["sizeBytes"]),
        )


@dataclass(frozen=True)
class Progress:
    out_time_s: float
    speed: float | None
    done: bool


def find_ffmpeg(configured: str | None = None) -> str:
    if configured is not None:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise MediaError(f"configured ffmpeg is not an executable file: {configured!r}")
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise MediaError("no ffmpeg found on PATH or in imageio-ffmpeg") from e


def _codec_name(stream: av.stream.Stream) -> str:
    # canonical_name is the codec id name ("mp3"); .name is the decoder ("mp3float").
    ctx = stream.codec_context
    return ctx.codec.canonical_name if ctx.codec is not None else ctx.name


def _duration_s(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.duration > 0 and video.time_base:
        return float(video.duration * Fraction(video.time_base))
    return 0.0


def _open(path: str | os.PathLike[str]) -> tuple[str, int, av.container.InputContainer]:
    """The file's name, size and PyAV container; ProbeError if it is not media."""
    name = os.fspath(path)
    try:
        size = os.stat(name).st_size
        container = av.open(name, metadata_errors="replace")
    except (OSError, av.FFmpegError) as e:
        raise ProbeError(f"cannot open {name!r} as media: {e}") from e
    return name, size, container


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    name, size, container = _open(path)
    with container:
        if not container.streams.video:
            raise ProbeError(f"{name!r} has no video stream")
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        if width <= 0 or height <= 0:
            raise ProbeError(f"{name!r} has an invalid frame size {width}x{height}")
        audio = container.streams.audio
        return MediaInfo(
            width=width,
            height=height,
            duration_s=_duration_s(container, video),
            video_codec=_codec_name(video),
            audio_codec=_codec_name(audio[0]) if audio else None,
            container=container.format.name,
            size_bytes=size,
        )


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    duration_s: float
    size_bytes: int


def _packets_span_s(container: av.container.InputContainer, audio: av.AudioStream) -> float:
    start: int | None = None
    end = 0
    for packet in container.demux(audio):
        if packet.pts is not None:
            start = packet.pts if start is None else min(start, packet.pts)
            end = max(end, packet.pts + (packet.duration or 0))
    if start is None or not audio.time_base:
        return 0.0
    return float((end - start) * Fraction(audio.time_base))


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """An audio file's codec and exact duration.

    Reads every packet (no decoding): a raw ADTS stream has no index, and the header-only
    estimate PyAV offers for it is derived from the bit rate and can be off by a lot.
    """
    name, size, container = _open(path)
    with container:
        if not container.streams.audio:
            raise ProbeError(f"{name!r} has no audio stream")
        audio = container.streams.audio[0]
        try:
            return AudioInfo(_codec_name(audio), _packets_span_s(container, audio), size)
        except av.FFmpegError as e:
            raise ProbeError(f"cannot read {name!r} to its end: {e}") from e


def format_of(info: MediaInfo) -> str | None:
    names = set(info.container.split(","))
    if names & {"mov", "mp4"}:
        return "mp4"
    if names & {"matroska", "webm"}:
        # The demuxer name is shared; WebM only allows VP8/VP9/AV1 video.
        return "webm" if info.video_codec in _WEBM_VIDEO_CODECS else "mkv"
    if "avi" in names:
        return "avi"
    if "flv" in names:
        return "flv"
    return None


def _codec_args(fmt: str) -> tuple[list[str], list[str]]:
    if fmt not in OUTPUT_CODECS:
        raise MediaError(f"unsupported output format {fmt!r}; expected one of {VIDEO_FORMATS}")
    return OUTPUT_CODECS[fmt]


def _threads_args(threads: int) -> list[str]:
    return ["-threads", str(threads)] if threads > 0 else []


def _job_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    fmt: str,
    filters: list[str],
    threads: int,
) -> list[str]:
    video_args, audio_args = _codec_args(fmt)
    return [
        ffmpeg, *_BASE_ARGS, *_PROGRESS_ARGS,
        "-i", os.fspath(src),
        "-map", "0:v:0", "-map", "0:a?",
        *filters, *video_args, *audio_args, *_threads_args(threads),
        "-f", MUXERS[fmt], os.fspath(dst),
    ]


def resize_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    width: int,
    height: int,
    fmt: str,
    threads: int = 0,
) -> list[str]:
    if width <= 0 or height <= 0:
        raise MediaError(f"invalid target size {width}x{height}")
    return _job_command(ffmpeg, src, dst, fmt, ["-vf", f"scale={width}:{height}"], threads)


def convert_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    fmt: str,
    threads: int = 0,
) -> list[str]:
    return _job_command(ffmpeg, src, dst, fmt, [], threads)


def thumbnail_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    at_s: float,
) -> list[str]:
    return [
        ffmpeg, *_BASE_ARGS,
        "-ss", f"{max(at_s, 0.0):.3f}", "-i", os.fspath(src),
        "-vf", "scale=320:-2", "-frames:v", "1", "-q:v", "4",
        # -update 1: write a single image, not an image sequence.
        "-update", "1", "-f", "image2", "-c:v", "mjpeg", os.fspath(dst),
    ]


def extract_audio_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    copy: bool,
    threads: int = 0,
) -> list[str]:
    """The first audio stream as raw AAC (ADTS): copied when it already is AAC, else encoded."""
    audio_args = ["-c:a", "copy"] if copy else _AAC_EXTRACT
    return [
        ffmpeg, *_BASE_ARGS, *_PROGRESS_ARGS,
        "-i", os.fspath(src),
        "-map", "0:a:0", "-vn", *audio_args, *_threads_args(threads),
        "-f", "adts", os.fspath(dst),
    ]


# --- HLS ladder ----------------------------------------------------------------

HLS_SEGMENT_S = 6
# Keyframes forced by time, not by frame count or scene cuts, so that every rendition
# of one ladder can be cut at the same instants (players switch at segment boundaries).
HLS_KEYFRAME_INTERVAL_S = 2
HLS_PLAYLIST = "index.m3u8"
HLS_SEGMENTS = "seg_%03d.ts"
HLS_AUDIO = "audio"
# Nominal video bit rate per height (kbit/s). CRF decides the actual rate; the nominal
# one only sets the cap: -maxrate 1.07x, -bufsize 1.5x, the usual HLS ladder ratios.
HLS_VIDEO_KBPS: dict[int, int] = {240: 400, 360: 800, 480: 1400, 720: 2800, 1080: 5000}
_HLS_AUDIO_KBPS = 128
# RFC 6381 codec strings of AAC by PyAV profile name; ffmpeg's aac encoder makes LC.
_AAC_CODECS = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}
# A last segment shorter than this would overstate the peak bit rate (ffmpeg skips it too).
_PEAK_MIN_SEGMENT_S = 0.5


@dataclass(frozen=True)
class Rendition:
    height: int
    width: int
    video_bitrate_k: int
    maxrate_k: int
    bufsize_k: int

    @property
    def name(self) -> str:
        return f"{self.height}p"


@dataclass(frozen=True)
class HlsSegment:
    uri: str
    duration_s: float
    size_bytes: int


@dataclass(frozen=True)
class HlsVariant:
    uri: str
    width: int
    height: int
    bandwidth: int
    average_bandwidth: int
    codecs: str


def _even_width(height: int, source_width: int, source_height: int) -> int:
    # The nearest even width keeping the aspect ratio, rounding halves up as scale=-2:H does.
    half = Fraction(height * source_width, 2 * source_height)
    return max(2, int(half + Fraction(1, 2)) * 2)


def rendition(height: int, source_width: int, source_height: int) -> Rendition:
    kbps = HLS_VIDEO_KBPS.get(height)
    if kbps is None:
        raise MediaError(f"unsupported rendition height {height}; expected one of {sorted(HLS_VIDEO_KBPS)}")
    if source_width <= 0 or source_height <= 0:
        raise MediaError(f"invalid source size {source_width}x{source_height}")
    return Rendition(height, _even_width(height, source_width, source_height), kbps,
                     kbps * 107 // 100, kbps * 3 // 2)


def ladder(source_height: int, requested_heights: Iterable[int], *, source_width: int) -> list[Rendition]:
    """The requested renditions no taller than the source, lowest first; empty when none fits."""
    heights = sorted({int(h) for h in requested_heights})
    renditions = [rendition(h, source_width, source_height) for h in heights]
    return [r for r in renditions if r.height <= source_height]


def _ladder_filter(renditions: Sequence[Rendition]) -> str:
    # Decode once, split the frames, scale each copy: one decoder feeds every encoder.
    splits = "".join(f"[s{i}]" for i in range(len(renditions)))
    scales = ";".join(f"[s{i}]scale={r.width}:{r.height}[v{i}]" for i, r in enumerate(renditions))
    return f"[0:v:0]split={len(renditions)}{splits};{scales}"


def _ladder_video_args(renditions: Sequence[Rendition]) -> list[str]:
    args = [
        *_X264,
        "-force_key_frames", f"expr:gte(t,n_forced*{HLS_KEYFRAME_INTERVAL_S})", "-sc_threshold", "0",
    ]
    for i, r in enumerate(renditions):
        args += [f"-maxrate:v:{i}", f"{r.maxrate_k}k", f"-bufsize:v:{i}", f"{r.bufsize_k}k"]
    return args


def _var_stream_map(renditions: Sequence[Rendition], has_audio: bool) -> str:
    # With audio, the one encoded audio stream is an audio-only rendition group that every
    # video variant refers to (EXT-X-MEDIA), instead of being encoded again per variant.
    group = f",agroup:{HLS_AUDIO}" if has_audio else ""
    variants = [f"v:{i}{group},name:{r.name}" for i, r in enumerate(renditions)]
    if has_audio:
        variants.append(f"a:0{group},name:{HLS_AUDIO}")
    return " ".join(variants)


def hls_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    renditions: Sequence[Rendition],
    has_audio: bool,
    threads: int = 0,
) -> list[str]:
    """One ffmpeg run writing `<out_dir>/<height>p/index.m3u8` per rendition (and `audio/`), no master."""
    if not renditions:
        raise MediaError("an HLS ladder needs at least one rendition")
    out = os.fspath(out_dir)
    maps = [arg for i in range(len(renditions)) for arg in ("-map", f"[v{i}]")]
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{_HLS_AUDIO_KBPS}k"] if has_audio else []
    return [
        ffmpeg, *_BASE_ARGS, *_PROGRESS_ARGS,
        "-i", os.fspath(src),
        "-filter_complex", _ladder_filter(renditions),
        *maps, *_ladder_video_args(renditions), *audio, *_threads_args(threads),
        "-f", "hls", "-hls_time", str(HLS_SEGMENT_S), "-hls_playlist_type", "vod",
        "-hls_segment_type", "mpegts",
        "-hls_segment_filename", os.path.join(out, "%v", HLS_SEGMENTS),
        "-var_stream_map", _var_stream_map(renditions, has_audio),
        os.path.join(out, "%v", HLS_PLAYLIST),
    ]


def _extinf_s(path: Path, line: str) -> float:
    try:
        return float(line.removeprefix("#EXTINF:").split(",", 1)[0])
    except ValueError as e:
        raise MediaError(f"{path}: bad segment duration in {line!r}") from e


def read_media_playlist(path: Path) -> list[HlsSegment]:
    """The segments a media playlist lists, each checked to exist."""
    segments: list[HlsSegment] = []
    duration_s: float | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration_s = _extinf_s(path, line)
        elif line and not line.startswith("#") and duration_s is not None:
            segment = path.parent / line
            if not segment.is_file():
                raise MediaError(f"{path} lists a missing segment {line!r}")
            segments.append(HlsSegment(line, duration_s, segment.stat().st_size))
            duration_s = None
    return segments


def peak_bitrate(segments: Sequence[HlsSegment]) -> int:
    timed = [s for s in segments if s.duration_s > _PEAK_MIN_SEGMENT_S] or [s for s in segments if s.duration_s > 0]
    return max((round(8 * s.size_bytes / s.duration_s) for s in timed), default=0)


def average_bitrate(segments: Sequence[HlsSegment]) -> int:
    total_s = sum(s.duration_s for s in segments)
    return round(8 * sum(s.size_bytes for s in segments) / total_s) if total_s > 0 else 0


def avc_codec_string(annexb: bytes) -> str | None:
    """RFC 6381 `avc1.PPCCLL` from the first SPS in an Annex B byte stream (profile, constraints, level)."""
    for match in re.finditer(b"\x00\x00\x01", annexb):
        nal = match.end()
        if nal + 4 <= len(annexb) and annexb[nal] & 0x1F == 7:
            return "avc1." + annexb[nal + 1:nal + 4].hex()
    return None


def _video_segment_facts(path: Path) -> tuple[int, int, str]:
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            codec = avc_codec_string(stream.codec_context.extradata or b"")
            if codec is None:
                codec = next((avc_codec_string(bytes(p)) for p in container.demux(stream) if p.size), None)
            width, height = stream.codec_context.width, stream.codec_context.height
    except (OSError, IndexError, av.FFmpegError) as e:
        raise MediaError(f"cannot read the video segment {path}: {e}") from e
    if codec is None:
        raise MediaError(f"no H.264 sequence parameter set in {path}")
    return width, height, codec


def _audio_segment_facts(path: Path) -> tuple[int, str]:
    try:
        with av.open(os.fspath(path)) as container:
            context = container.streams.audio[0].codec_context
            return context.layout.nb_channels, _AAC_CODECS.get(context.profile or "", _AAC_CODECS["LC"])
    except (OSError, IndexError, av.FFmpegError) as e:
        raise MediaError(f"cannot read the audio segment {path}: {e}") from e


def _variant(out_dir: Path, rendition: Rendition, audio: Sequence[HlsSegment], audio_codec: str | None) -> HlsVariant:
    uri = f"{rendition.name}/{HLS_PLAYLIST}"
    segments = read_media_playlist(out_dir / uri)
    if not segments:
        raise MediaError(f"{uri} lists no segment")
    width, height, video_codec = _video_segment_facts(out_dir / rendition.name / segments[0].uri)
    codecs = video_codec if audio_codec is None else f"{video_codec},{audio_codec}"
    return HlsVariant(uri, width, height, peak_bitrate(segments) + peak_bitrate(audio),
                      average_bitrate(segments) + average_bitrate(audio), codecs)


def master_playlist(variants: Sequence[HlsVariant], audio_channels: int | None) -> str:
    """The master playlist; `audio_channels` None for a ladder without audio."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    group = ""
    if audio_channels is not None:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{HLS_AUDIO}",NAME="{HLS_AUDIO}",DEFAULT=YES,'
                     f'AUTOSELECT=YES,CHANNELS="{audio_channels}",URI="{HLS_AUDIO}/{HLS_PLAYLIST}"')
        group = f',AUDIO="{HLS_AUDIO}"'
    for v in variants:
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
                     f'RESOLUTION={v.width}x{v.height},CODECS="{v.codecs}"{group}')
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


def write_hls_master(master: Path, renditions: Sequence[Rendition], has_audio: bool) -> list[HlsVariant]:
    """Write `master`, the master playlist of the ladder ffmpeg finished beside it, from what it actually wrote.

    BANDWIDTH is the peak segment bit rate of the video plus that of the audio group, as RFC 8216
    asks; ffmpeg's own master playlist leaves the audio group out of it and lists the audio group
    as one more variant, hence our own.
    """
    out_dir = master.parent
    audio: list[HlsSegment] = []
    channels: int | None = None
    audio_codec: str | None = None
    if has_audio:
        audio = read_media_playlist(out_dir / HLS_AUDIO / HLS_PLAYLIST)
        if not audio:
            raise MediaError(f"{HLS_AUDIO}/{HLS_PLAYLIST} lists no segment")
        channels, audio_codec = _audio_segment_facts(out_dir / HLS_AUDIO / audio[0].uri)
    variants = [_variant(out_dir, r, audio, audio_codec) for r in renditions]
    master.write_text(master_playlist(variants, channels))
    return variants


def _parse_out_time(value: str) -> float | None:
    try:
        return max(int(value), 0) / 1_000_000
    except ValueError:
        return None


def _parse_speed(value: str) -> float | None:
    try:
        return float(value.strip().removesuffix("x"))
    except ValueError:
        return None


class ProgressParser:
    """Turns ffmpeg `-progress` key=value lines into one Progress per block."""

    def __init__(self) -> None:
        self._out_time_s = 0.0
        self._speed: float | None = None

    def feed(self, line: str) -> Progress | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        value = value.strip()
        if key == "out_time_us":
            parsed = _parse_out_time(value)
            # Never move backwards: ffmpeg reports N/A mid-run, and at start-up it
            # reports queued audio that runs ahead of the buffering video encoder.
            if parsed is not None:
                self._out_time_s = max(self._out_time_s, parsed)
        elif key == "speed":
            self._speed = _parse_speed(value)
        elif key == "progress":
            return Progress(self._out_time_s, self._speed, done=value == "end")
        return None


def percent(progress: Progress, duration_s: float) -> float:
    if progress.done:
        return 100.0
    if duration_s <= 0:
        return 0.0
    return round(min(max(progress.out_time_s / duration_s * 100, 0.0), 100.0), 1)


def eta_seconds(progress: Progress, duration_s: float) -> float | None:
    if progress.done:
        return 0.0
    if progress.speed is None or progress.speed <= 0 or duration_s <= 0:
        return None
    return max(duration_s - progress.out_time_s, 0.0) / progress.speed


def _stderr_tail(stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-_STDERR_TAIL_LINES:])


async def run_quick(argv: list[str], timeout_s: float) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise MediaError(f"cannot start {argv[0]!r}: {e}") from e
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError as e:
        raise MediaError(f"ffmpeg timed out after {timeout_s:g}s") from e
    finally:
        # Also covers cancellation: never leave ffmpeg running behind us.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg exited with {proc.returncode}: {_stderr_tail(stderr)}")
