"""HLS ladders: the renditions, the one-pass ffmpeg command, and the master playlist written last."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cluster.media import (
    BASE_ARGS,
    PROGRESS_ARGS,
    X264_ARGS,
    MediaError,
    input_args,
    threads_args,
)

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
RENDITION_HEIGHTS = tuple(sorted(HLS_VIDEO_KBPS))
DEFAULT_HEIGHTS = (240, 360, 720, 1080)
MAX_RENDITIONS = len(HLS_VIDEO_KBPS)
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


def requested_heights(value: object) -> list[int]:
    """The rendition heights a request names, checked: the one definition routes and executors share."""
    if (not isinstance(value, (list, tuple)) or not value or len(value) > MAX_RENDITIONS
            or not all(isinstance(h, int) and not isinstance(h, bool) for h in value)):
        raise MediaError(f"renditions must be a list of 1 to {MAX_RENDITIONS} heights, e.g. [240, 360, 720]")
    unknown = sorted({h for h in value if h not in HLS_VIDEO_KBPS})
    if unknown:
        raise MediaError(f"unsupported rendition height {unknown[0]}; expected one of {list(RENDITION_HEIGHTS)}")
    return sorted(set(value))


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
        *X264_ARGS,
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
    src_format: str | None = None,
) -> list[str]:
    """One ffmpeg run writing `<out_dir>/<height>p/index.m3u8` per rendition (and `audio/`), no master."""
    if not renditions:
        raise MediaError("an HLS ladder needs at least one rendition")
    out = os.fspath(out_dir)
    maps = [arg for i in range(len(renditions)) for arg in ("-map", f"[v{i}]")]
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{_HLS_AUDIO_KBPS}k"] if has_audio else []
    return [
        ffmpeg, *BASE_ARGS, *PROGRESS_ARGS,
        *input_args(src, src_format),
        "-filter_complex", _ladder_filter(renditions),
        *maps, *_ladder_video_args(renditions), *audio, *threads_args(threads),
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
    import av  # loaded on first use: the web workers import this module but never read a segment

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
    import av

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
