"""ffmpeg/PyAV helpers: locate ffmpeg, probe files, build commands, parse progress."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import imageio_ffmpeg

if TYPE_CHECKING:  # PyAV (~28 MB) loads on the first probe: a web worker needs it only for uploads
    import av

VIDEO_FORMATS = ("mp4", "mov", "avi", "webm", "mkv", "flv")

# veryfast at CRF 21 matches the quality of x264's default (medium) at CRF 23 in a third of the time:
# on bench/encode_bench.py's clip, 0.3 VMAF points lower for 9 % more bits; CRF 23 lost 2.4 points.
X264_ARGS = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-pix_fmt", "yuv420p"]
_FASTSTART = ["-movflags", "+faststart"]
_AAC = ["-c:a", "aac", "-b:a", "128k"]
_AAC_EXTRACT = ["-c:a", "aac", "-b:a", "160k"]

OUTPUT_CODECS: dict[str, tuple[list[str], list[str]]] = {
    "mp4": ([*X264_ARGS, *_FASTSTART], _AAC),
    "mov": ([*X264_ARGS, *_FASTSTART], _AAC),
    "mkv": (X264_ARGS, _AAC),
    # FLV only supports 44100/22050/11025 Hz audio.
    "flv": (X264_ARGS, [*_AAC, "-ar", "44100"]),
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

# The demuxers of VIDEO_FORMATS, by our format name. An upload is opened only by one of these: never
# by a playlist or list demuxer (hls, concat, dash, image2...) that would read other files.
DEMUXERS: dict[str, str] = {"mp4": "mov", "mov": "mov", "mkv": "matroska", "webm": "matroska", "avi": "avi",
                            "flv": "flv"}
SOURCE_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv"  # every name those demuxers answer to
_SAFE_SOURCE = {"protocol_whitelist": "file", "format_whitelist": SOURCE_DEMUXERS}
_LOCAL_ONLY = {"protocol_whitelist": "file"}
# The heads of text files that name other files; refused with a message that says so.
_LIST_HEADS = ((b"#EXTM3U", "an HLS playlist"), (b"ffconcat", "a concat list"), (b"file ", "a concat list"),
               (b"<?xml", "an XML manifest (DASH)"), (b"<MPD", "a DASH manifest"))
# How a job's output fits the requested size; pixels stay square (SAR 1:1) whichever.
FITS = ("contain", "cover", "stretch")
DEFAULT_FIT = "contain"

_WEBM_VIDEO_CODECS = frozenset({"vp8", "vp9", "av1"})
BASE_ARGS = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
PROGRESS_ARGS = ["-progress", "pipe:1", "-nostats", "-stats_period", "0.1"]
_STDERR_TAIL_LINES = 5


class MediaError(Exception):
    """An ffmpeg-related failure."""


class ProbeError(MediaError):
    """The file is not a readable video."""


class SourceRefused(ProbeError):
    """A readable file that is not accepted: a playlist or list of files, or past a limit."""


@dataclass(frozen=True)
class SourceLimits:
    """What a source may be (config: --max-source-pixels, --max-source-fps, --max-source-duration-s)."""

    max_pixels: int = 7680 * 4320  # 8K UHD
    max_fps: float = 240.0
    max_duration_s: float = 6 * 3600.0

    def check(self, info: MediaInfo) -> None:
        pixels = info.width * info.height
        if pixels > self.max_pixels:
            raise SourceRefused(f"the frame is {info.width}x{info.height} ({pixels} pixels): "
                                f"the limit is {self.max_pixels} pixels per frame")
        if info.frame_rate > self.max_fps:
            raise SourceRefused(f"the frame rate is {info.frame_rate:g} fps: the limit is {self.max_fps:g} fps")
        if info.duration_s > self.max_duration_s:
            raise SourceRefused(f"the video lasts {info.duration_s:g} s: the limit is {self.max_duration_s:g} s")


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    container: str
    size_bytes: int
    frame_rate: float = 0.0  # average frames per second; 0 when unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "duration": self.duration_s,
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "container": self.container,
            "sizeBytes": self.size_bytes,
            "frameRate": self.frame_rate,
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
            frame_rate=float(d.get("frameRate") or 0.0),
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
    import av

    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.duration > 0 and video.time_base:
        return float(video.duration * Fraction(video.time_base))
    return 0.0


def _open(path: str | os.PathLike[str], options: dict[str, str],
          decoder: dict[str, str] | None = None) -> tuple[str, int, av.container.InputContainer]:
    """The file's base name (errors never show a server path), size and PyAV container; ProbeError if it is
    not media."""
    import av

    full = os.fspath(path)
    name = os.path.basename(full)
    try:
        size = os.stat(full).st_size
        container = av.open(full, metadata_errors="replace", options=decoder or {}, container_options=options)
    except (OSError, av.FFmpegError) as e:
        kind = _list_kind(full)
        if kind is not None:
            raise SourceRefused(f"{name!r} is {kind}: playlists and lists of other files are refused") from e
        raise ProbeError(f"cannot open {name!r} as media: {_without_path(str(e), full)}") from e
    return name, size, container


def _without_path(message: str, full: str) -> str:
    return message.replace(full, os.path.basename(full))


def _list_kind(full: str) -> str | None:
    try:
        with open(full, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    return next((kind for start, kind in _LIST_HEADS if head.startswith(start)), None)


def _frame_rate(video: av.VideoStream) -> float:
    rate = video.average_rate or video.guessed_rate
    return round(float(rate), 3) if rate else 0.0


def probe_source(path: str | os.PathLike[str], limits: SourceLimits | None = None) -> MediaInfo:
    """An upload's or a job source's facts, read only by the demuxers of VIDEO_FORMATS (never a playlist
    or a list of other files); past ``limits``, SourceRefused."""
    # max_pixels: the decoders that read a first frame refuse a bomb's frame rather than allocate it
    # (an 11520x11520 upload: 352 MB to probe without, 88 MB with); the size comes from the headers.
    decoder = {"max_pixels": str(limits.max_pixels)} if limits is not None else {}
    info = _probe(path, _SAFE_SOURCE, decoder)
    if limits is not None:
        limits.check(info)
    return info


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """A file's facts, by whichever demuxer fits, from local files only: for what we made ourselves."""
    return _probe(path, _LOCAL_ONLY)


def _probe(path: str | os.PathLike[str], options: dict[str, str],
           decoder: dict[str, str] | None = None) -> MediaInfo:
    name, size, container = _open(path, options, decoder)
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
            frame_rate=_frame_rate(video),
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
    import av

    name, size, container = _open(path, _LOCAL_ONLY)
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


def input_args(src: str | os.PathLike[str], src_format: str | None) -> list[str]:
    """``-i src`` reading local files only, with the source's own demuxer when its format is known."""
    demuxer = ["-f", DEMUXERS[src_format]] if src_format in DEMUXERS else ["-format_whitelist", SOURCE_DEMUXERS]
    return ["-protocol_whitelist", "file", *demuxer, "-i", os.fspath(src)]


def threads_args(threads: int) -> list[str]:
    return ["-threads", str(threads)] if threads > 0 else []


def _job_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    fmt: str,
    filters: list[str],
    threads: int,
    src_format: str | None,
) -> list[str]:
    video_args, audio_args = _codec_args(fmt)
    return [
        ffmpeg, *BASE_ARGS, *PROGRESS_ARGS,
        *input_args(src, src_format),
        "-map", "0:v:0", "-map", "0:a?",
        *filters, *video_args, *audio_args, *threads_args(threads),
        "-f", MUXERS[fmt], os.fspath(dst),
    ]


def resize_filter(width: int, height: int, fit: str = DEFAULT_FIT) -> str:
    """Exactly ``width``x``height`` with square pixels: ``stretch`` scales to it, ``contain`` letterboxes
    (scale to fit inside, pad the rest black), ``cover`` crops (scale to fill, cut the overflow).

    Fitting compares display aspect ratios (``dar``), so a source with non-square pixels keeps its shape.
    """
    if width <= 0 or height <= 0:
        raise MediaError(f"invalid target size {width}x{height}")
    if fit == "stretch":
        return f"scale={width}:{height},setsar=1"
    if fit not in FITS:
        raise MediaError(f"unknown fit {fit!r}; expected one of {', '.join(FITS)}")
    bound = "min" if fit == "contain" else "max"
    # even sizes of at least 2 (0 would mean "keep the aspect" to scale), as yuv420p needs;
    # rounding keeps an exact aspect ratio exact
    scale = (f"scale=w='2*max(1,round({bound}({width},{height}*dar)/2))':"
             f"h='2*max(1,round({bound}({height},{width}/dar)/2))'")
    fitted = f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2" if fit == "contain" else f"crop={width}:{height}"
    return f"{scale},{fitted},setsar=1"


def resize_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    width: int,
    height: int,
    fmt: str,
    threads: int = 0,
    fit: str = DEFAULT_FIT,
) -> list[str]:
    """``fmt`` is the source's format, also the output's."""
    return _job_command(ffmpeg, src, dst, fmt, ["-vf", resize_filter(width, height, fit)], threads, fmt)


def convert_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    fmt: str,
    threads: int = 0,
    src_format: str | None = None,
) -> list[str]:
    return _job_command(ffmpeg, src, dst, fmt, [], threads, src_format)


def thumbnail_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    at_s: float,
    src_format: str | None = None,
    width: int = 320,
) -> list[str]:
    return [
        ffmpeg, *BASE_ARGS,
        "-ss", f"{max(at_s, 0.0):.3f}", *input_args(src, src_format),
        "-vf", f"scale={width}:-2", "-frames:v", "1", "-q:v", "4",
        # -update 1: write a single image, not an image sequence.
        "-update", "1", "-f", "image2", "-c:v", "mjpeg", os.fspath(dst),
    ]


def extract_audio_command(
    ffmpeg: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    copy: bool,
    threads: int = 0,
    src_format: str | None = None,
) -> list[str]:
    """The first audio stream as raw AAC (ADTS): copied when it already is AAC, else encoded."""
    audio_args = ["-c:a", "copy"] if copy else _AAC_EXTRACT
    return [
        ffmpeg, *BASE_ARGS, *PROGRESS_ARGS,
        *input_args(src, src_format),
        "-map", "0:a:0", "-vn", *audio_args, *threads_args(threads),
        "-f", "adts", os.fspath(dst),
    ]


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
