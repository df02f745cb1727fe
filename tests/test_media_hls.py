"""The HLS ladder and audio extraction builders of cluster.media, and the playlists they lead to."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import av
import pytest

from cluster.hls import (
    HLS_AUDIO,
    HLS_KEYFRAME_INTERVAL_S,
    HLS_PLAYLIST,
    HLS_SEGMENT_S,
    HlsSegment,
    HlsVariant,
    Rendition,
    avc_codec_string,
    average_bitrate,
    hls_command,
    ladder,
    master_playlist,
    peak_bitrate,
    read_media_playlist,
    rendition,
    write_hls_master,
)
from cluster.media import MediaError, extract_audio_command, find_ffmpeg, probe

LADDER_CLIP_SECONDS = 37  # 7 segments: more than the 5 a live HLS playlist keeps


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return find_ffmpeg()


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- ladder ------------------------------------------------------------------


def test_ladder_keeps_renditions_no_taller_than_the_source() -> None:
    got = ladder(720, [1080, 240, 720, 360], source_width=1280)
    assert [(r.height, r.width) for r in got] == [(240, 426), (360, 640), (720, 1280)]


def test_ladder_sorts_and_deduplicates() -> None:
    assert [r.height for r in ladder(1080, [720, 240, 720, 240], source_width=1920)] == [240, 720]


def test_ladder_is_empty_when_nothing_fits() -> None:
    assert ladder(200, [240, 360], source_width=320) == []


def test_ladder_refuses_an_unknown_height() -> None:
    with pytest.raises(MediaError, match="unsupported rendition height 250"):
        ladder(1080, [240, 250], source_width=1920)


def test_rendition_bit_rate_caps() -> None:
    assert rendition(240, 1280, 720) == Rendition(height=240, width=426, video_bitrate_k=400, maxrate_k=428,
                                                  bufsize_k=600)
    assert rendition(1080, 1920, 1080) == Rendition(1080, 1920, 5000, 5350, 7500)
    assert rendition(360, 640, 360).name == "360p"


@pytest.mark.parametrize(("width", "height", "target"), [(1000, 562, 240), (720, 1280, 240), (1278, 720, 360)])
def test_rendition_width_is_what_scale_minus_2_makes(ffmpeg: str, tmp_path: Path, width: int, height: int,
                                                     target: int) -> None:
    out = tmp_path / "frame.nut"
    subprocess.run([
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
        "-i", f"color=size={width}x{height}:duration=0.04", "-vf", f"scale=-2:{target}", "-frames:v", "1", str(out),
    ], check=True, timeout=30)
    scaled = probe(out)
    made = rendition(target, width, height)
    assert (made.width, made.height) == (scaled.width, scaled.height)
    assert made.width % 2 == 0


# --- hls_command ---------------------------------------------------------------


def test_hls_command_decodes_once_and_encodes_audio_once(ffmpeg: str) -> None:
    renditions = ladder(720, [240, 360, 720], source_width=1280)
    argv = hls_command(ffmpeg, "in.mp4", "out", renditions, has_audio=True, threads=2)
    assert argv.count("-i") == 1
    assert _option(argv, "-filter_complex") == (
        "[0:v:0]split=3[s0][s1][s2];[s0]scale=426:240[v0];[s1]scale=640:360[v1];[s2]scale=1280:720[v2]"
    )
    assert argv.count("-c:a") == 1 and _option(argv, "-c:a") == "aac" and _option(argv, "-b:a") == "128k"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["[v0]", "[v1]", "[v2]", "0:a:0"]
    assert _option(argv, "-var_stream_map") == (
        "v:0,agroup:audio,name:240p v:1,agroup:audio,name:360p v:2,agroup:audio,name:720p a:0,agroup:audio,name:audio"
    )
    assert [_option(argv, f"-maxrate:v:{i}") for i in range(3)] == ["428k", "856k", "2996k"]
    assert [_option(argv, f"-bufsize:v:{i}") for i in range(3)] == ["600k", "1200k", "4200k"]
    assert _option(argv, "-force_key_frames") == f"expr:gte(t,n_forced*{HLS_KEYFRAME_INTERVAL_S})"
    assert _option(argv, "-sc_threshold") == "0"
    assert _option(argv, "-hls_time") == str(HLS_SEGMENT_S)
    assert _option(argv, "-hls_playlist_type") == "vod"
    assert _option(argv, "-hls_segment_filename") == "out/%v/seg_%03d.ts"
    assert _option(argv, "-threads") == "2"
    assert "-progress" in argv and argv[-1] == "out/%v/index.m3u8"
    assert "-master_pl_name" not in argv  # the master playlist is ours, written last


def test_hls_command_without_audio(ffmpeg: str) -> None:
    argv = hls_command(ffmpeg, "in.mp4", "out", ladder(360, [240], source_width=640), has_audio=False)
    assert "-c:a" not in argv and "0:a:0" not in argv and "-threads" not in argv
    assert _option(argv, "-filter_complex") == "[0:v:0]split=1[s0];[s0]scale=426:240[v0]"
    assert _option(argv, "-var_stream_map") == "v:0,name:240p"


def test_hls_command_needs_a_rendition(ffmpeg: str) -> None:
    with pytest.raises(MediaError):
        hls_command(ffmpeg, "in.mp4", "out", [], has_audio=True)


# --- extract_audio_command -----------------------------------------------------


def test_extract_audio_command_copy_and_encode(ffmpeg: str) -> None:
    copy = extract_audio_command(ffmpeg, "in.mp4", "out.part", copy=True)
    assert copy[:6] == [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
    assert _option(copy, "-c:a") == "copy" and "-b:a" not in copy
    assert "-vn" in copy and _option(copy, "-map") == "0:a:0"
    assert "-progress" in copy and "-threads" not in copy
    assert copy[-3:] == ["-f", "adts", "out.part"]
    encode = extract_audio_command(ffmpeg, "in.mkv", "out.part", copy=False, threads=1)
    assert (_option(encode, "-c:a"), _option(encode, "-b:a"), _option(encode, "-threads")) == ("aac", "160k", "1")


# --- playlists -------------------------------------------------------------------


def test_avc_codec_string_reads_the_sps() -> None:
    sps = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x1f\xac\xd9"
    assert avc_codec_string(sps) == "avc1.64001f"
    assert avc_codec_string(b"\x00\x00\x01\x68\xeb\xe3\xcb") is None  # a PPS only
    assert avc_codec_string(b"") is None


def test_bit_rates_of_segments() -> None:
    segments = [HlsSegment("a", 6.0, 750_000), HlsSegment("b", 6.0, 300_000), HlsSegment("c", 0.2, 50_000)]
    assert peak_bitrate(segments) == 1_000_000  # the 0.2 s tail would claim 2 Mbit/s
    assert average_bitrate(segments) == round(8 * 1_100_000 / 12.2)
    assert peak_bitrate([HlsSegment("c", 0.2, 50_000)]) == 2_000_000
    assert peak_bitrate([]) == average_bitrate([]) == 0


def test_read_media_playlist(tmp_path: Path) -> None:
    (tmp_path / "seg_000.ts").write_bytes(b"x" * 100)
    (tmp_path / "seg_001.ts").write_bytes(b"x" * 40)
    playlist = tmp_path / HLS_PLAYLIST
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.000000,\nseg_000.ts\n"
                        "#EXTINF:1.5,\nseg_001.ts\n#EXT-X-ENDLIST\n")
    assert read_media_playlist(playlist) == [HlsSegment("seg_000.ts", 6.0, 100), HlsSegment("seg_001.ts", 1.5, 40)]
    (tmp_path / "seg_001.ts").unlink()
    with pytest.raises(MediaError, match="missing segment"):
        read_media_playlist(playlist)


def test_master_playlist_text() -> None:
    variants = [HlsVariant("240p/index.m3u8", 426, 240, 500_000, 400_000, "avc1.640015,mp4a.40.2")]
    assert master_playlist(variants, audio_channels=2).splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        ('#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",'
         'URI="audio/index.m3u8"'),
        ('#EXT-X-STREAM-INF:BANDWIDTH=500000,AVERAGE-BANDWIDTH=400000,RESOLUTION=426x240,'
         'CODECS="avc1.640015,mp4a.40.2",AUDIO="audio"'),
        "240p/index.m3u8",
    ]
    video_only = master_playlist([HlsVariant("240p/index.m3u8", 426, 240, 5, 4, "avc1.640015")], None)
    assert "AUDIO" not in video_only and "EXT-X-MEDIA" not in video_only


# --- a real ladder -----------------------------------------------------------------


@pytest.fixture(scope="module")
def ladder_dir(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 clip with audio cut into a 240p + 360p ladder by hls_command, plus our master."""
    base = tmp_path_factory.mktemp("ladder")
    clip = base / "clip.mp4"
    subprocess.run([  # 10 frames/s keeps this long clip cheap to make and to cut
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=10:duration={LADDER_CLIP_SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={LADDER_CLIP_SECONDS}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip),
    ], check=True, timeout=60)
    out = base / "hls"
    out.mkdir()
    renditions = ladder(360, [240, 360], source_width=640)
    subprocess.run(hls_command(ffmpeg, clip, out, renditions, has_audio=True, threads=2),
                   check=True, timeout=60, capture_output=True)
    write_hls_master(out / "master.m3u8", renditions, has_audio=True)
    return out


def test_segments_are_aligned_across_renditions(ladder_dir: Path) -> None:
    durations = [[s.duration_s for s in read_media_playlist(ladder_dir / name / HLS_PLAYLIST)]
                 for name in ("240p", "360p")]
    assert durations[0] == durations[1]
    full, tail = divmod(LADDER_CLIP_SECONDS, HLS_SEGMENT_S)
    assert durations[0] == pytest.approx([HLS_SEGMENT_S] * full + [tail], abs=0.05)  # VOD: no sliding window


def test_every_video_segment_starts_with_a_keyframe(ladder_dir: Path) -> None:
    for name in ("240p", "360p"):
        for segment in read_media_playlist(ladder_dir / name / HLS_PLAYLIST):
            with av.open(str(ladder_dir / name / segment.uri)) as container:
                first = next(p for p in container.demux(container.streams.video[0]) if p.size)
                assert first.is_keyframe, f"{name}/{segment.uri}"


def test_audio_is_a_rendition_of_its_own(ladder_dir: Path) -> None:
    audio = read_media_playlist(ladder_dir / HLS_AUDIO / HLS_PLAYLIST)
    assert sum(s.duration_s for s in audio) == pytest.approx(LADDER_CLIP_SECONDS, abs=0.1)
    with av.open(str(ladder_dir / "240p" / "seg_000.ts")) as container:
        assert not container.streams.audio
    master = (ladder_dir / "master.m3u8").read_text()
    assert master.count("#EXT-X-STREAM-INF:") == 2
    assert master.count('AUDIO="audio"') == 2



def test_master_codecs_match_the_streams(ladder_dir: Path) -> None:
    master = (ladder_dir / "master.m3u8").read_text()
    for name in ("240p", "360p"):
        with av.open(str(ladder_dir / name / "seg_000.ts")) as container:
            video = container.streams.video[0].codec_context
            profile, level = video.profile, video.level
        codecs = re.search(rf'CODECS="([^"]+)".*\n{name}/', master)
        assert codecs is not None
        avc, aac = codecs.group(1).split(",")
        assert (profile, aac) == ("High", "mp4a.40.2")
        assert avc[:7] == "avc1.64" and int(avc[-2:], 16) == level  # profile_idc 100: High
