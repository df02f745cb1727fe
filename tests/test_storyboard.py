"""The storyboard, preview and thumbnail kinds run by an executor on real clips with the real ffmpeg, their
outputs read back by decoders that are not ours (Pillow, webvtt-py); and their parameters' 400s."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import webvtt
from PIL import Image

from cluster import kinds
from cluster.jobspec import InvalidJob
from cluster.kinds import storyboard
from cluster.media import find_ffmpeg, probe
from cluster.storage import LocalStorage
from primary.jobs import Job as StoredJob
from primary.run_files import RunFiles
from tests.harness import generate_clip
from workers.executor.jobs import execute

VIDEO_ID = "v1"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 s, 320x240."""
    return generate_clip(tmp_path_factory.mktemp("clips") / "seven.mp4", seconds=7, size="320x240")


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 s, 640x360: more tiles than one row holds."""
    return generate_clip(tmp_path_factory.mktemp("clips") / "wide.mp4", seconds=25, size="640x360", audio=False)


def stored(root: Path, clip: Path) -> tuple[LocalStorage, dict[str, Any]]:
    storage = LocalStorage(root / "storage")
    storage.prepare()
    original = storage.original(VIDEO_ID, "mp4")
    original.parent.mkdir(parents=True)
    shutil.copyfile(clip, original)
    return storage, {"videoId": VIDEO_ID, "name": clip.name, "info": {**probe(clip).to_dict(), "format": "mp4"}}


def run(storage: LocalStorage, video: dict[str, Any], job_type: str, body: dict[str, Any],
        run_id: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The params the route would make of `body`, and the result of running them."""
    _, params, _ = kinds.job_request(job_type, body, video["info"])
    payload = {"type": job_type, "videoId": VIDEO_ID, "params": params, "timeoutS": 60, "threads": 2, "video": video}
    return params, asyncio.run(execute(payload, storage, find_ffmpeg(), lambda *_: None, run_id))


def sprite_of(storage: LocalStorage) -> Path:
    return storage.video_dir(VIDEO_ID) / "storyboard" / "sprite.jpg"


def cues_of(storage: LocalStorage) -> list[webvtt.Caption]:
    return list(webvtt.read(str(storage.video_dir(VIDEO_ID) / "storyboard" / "storyboard.vtt")))


def test_a_storyboard_is_a_sprite_of_tiles_and_a_vtt_mapping_each_interval_to_its_tile(
        tmp_path: Path, clip: Path) -> None:
    storage, video = stored(tmp_path, clip)
    params, result = run(storage, video, "storyboard", {"interval": 2, "width": 96})
    assert params == {"interval": 2.0, "width": 96}
    with Image.open(sprite_of(storage)) as sprite:
        assert sprite.format == "JPEG"
        assert sprite.size == (4 * 96, 1 * 72), "4 tiles (0-2, 2-4, 4-6, 6-7 s) of 96x72 in one row"
        # the last tile holds a frame, not the tile filter's blank padding
        last_tile = sprite.crop((3 * 96, 0, 4 * 96, 72)).convert("L")
        assert last_tile.getextrema()[1] > 64
    cues = cues_of(storage)
    assert [(c.start_in_seconds, c.end_in_seconds) for c in cues] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    sprite_url = f"/get-video-asset?videoId={VIDEO_ID}&type=storyboard&v=2-96"
    assert [c.text for c in cues] == [f"{sprite_url}#xywh={x},0,96,72" for x in (0, 96, 192, 288)]
    assert result["tiles"] == 4 and (result["columns"], result["rows"]) == (4, 1)
    assert [o["name"] for o in result["outputs"]] == ["sprite.jpg", "storyboard.vtt"]
    assert [o["contentType"] for o in result["outputs"]] == ["image/jpeg", "text/vtt"]
    assert result["outputs"][0]["size"] == sprite_of(storage).stat().st_size
    assert not list(storage.video_dir(VIDEO_ID).glob(".*.part")), "no partial directory left"


def test_a_long_storyboard_wraps_at_ten_columns(tmp_path: Path, wide_clip: Path) -> None:
    storage, video = stored(tmp_path, wide_clip)
    _, result = run(storage, video, "storyboard", {"interval": 1, "width": 64})
    with Image.open(sprite_of(storage)) as sprite:
        assert sprite.size == (10 * 64, 3 * 36), "25 tiles of 64x36: 10 columns, 3 rows"
    cues = cues_of(storage)
    assert len(cues) == result["tiles"] == 25
    assert cues[10].text.endswith("#xywh=0,36,64,36") and cues[24].text.endswith("#xywh=256,72,64,36")
    assert cues[-1].end_in_seconds == pytest.approx(25, abs=0.05)


def test_a_fenced_storyboard_is_moved_in_place_whole_by_the_primary(tmp_path: Path, clip: Path) -> None:
    storage, video = stored(tmp_path, clip)
    params, _ = run(storage, video, "storyboard", {"interval": 3}, run_id="run1")
    final = storage.video_dir(VIDEO_ID) / "storyboard"
    partial = LocalStorage.run_partial(final, "run1")
    assert not final.exists() and sorted(p.name for p in partial.iterdir()) == ["sprite.jpg", "storyboard.vtt"]
    job = StoredJob(id="j1", type="storyboard", video_id=VIDEO_ID, params=params)
    asyncio.run(RunFiles(storage, lambda _v: video).accept(job, "run1"))
    assert not partial.exists() and len(cues_of(storage)) == 3


def test_a_preview_is_an_animated_webp_of_length_times_fps_frames(tmp_path: Path, clip: Path) -> None:
    storage, video = stored(tmp_path, clip)
    params, result = run(storage, video, "preview", {"start": 1, "length": 2, "width": 160, "fps": 8})
    assert params == {"start": 1.0, "length": 2.0, "width": 160, "fps": 8}
    with Image.open(storage.video_dir(VIDEO_ID) / "preview.webp") as preview:
        assert preview.format == "WEBP" and preview.is_animated
        assert preview.size == (160, 120)
        assert preview.n_frames == pytest.approx(16, abs=1)
    assert result["outputs"] == [{"name": "preview.webp", "url": f"/get-video-asset?videoId={VIDEO_ID}&type=preview",
                                  "contentType": "image/webp",
                                  "size": (storage.video_dir(VIDEO_ID) / "preview.webp").stat().st_size}]


def test_a_preview_near_the_end_is_as_long_as_what_is_left(tmp_path: Path, clip: Path) -> None:
    storage, video = stored(tmp_path, clip)
    params, _ = run(storage, video, "preview", {"start": 6, "length": 10, "fps": 4})
    assert params["length"] == pytest.approx(1.0, abs=0.05)
    with Image.open(storage.video_dir(VIDEO_ID) / "preview.webp") as preview:
        assert preview.n_frames == pytest.approx(4, abs=1)


def test_a_thumbnail_replaces_the_videos_at_the_time_and_width_asked(tmp_path: Path, clip: Path) -> None:
    storage, video = stored(tmp_path, clip)
    params, result = run(storage, video, "thumbnail", {"at": 3.5, "width": 200})
    assert params == {"at": 3.5, "width": 200}
    with Image.open(storage.thumbnail(VIDEO_ID)) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (200, 150)
    assert (result["width"], result["height"]) == (200, 150)
    # by default 10 % in; a time past the last frame is clipped to it, and still makes an image
    assert kinds.job_request("thumbnail", {}, video["info"])[1] == {"at": 0.7, "width": 320}
    params, _ = run(storage, video, "thumbnail", {"at": 3600})
    assert params["at"] == pytest.approx(6.96)
    with Image.open(storage.thumbnail(VIDEO_ID)) as thumbnail:
        assert thumbnail.size == (320, 240)


INFO = {"width": 1280, "height": 720, "duration": 60.0, "frameRate": 25.0, "format": "mp4", "audioCodec": None}


@pytest.mark.parametrize("job_type, body, message", [
    ("storyboard", {"interval": 0.1}, "interval must be between 0.5 and 600 seconds"),
    ("storyboard", {"interval": "5"}, "interval must be a number of seconds"),
    ("storyboard", {"interval": True}, "interval must be a number of seconds"),
    ("storyboard", {"width": 1000}, "width must be between 32 and 480"),
    ("storyboard", {"width": 101}, "width must be even"),
    ("storyboard", {"interval": 0.25}, "interval must be between"),
    ("preview", {"start": 60}, "start must be before the end of the video (60 seconds)"),
    ("preview", {"start": -1}, "start must be between 0"),
    ("preview", {"length": 11}, "length must be between 0.5 and 10 seconds"),
    ("preview", {"fps": 60}, "fps must be between 1 and 30"),
    ("preview", {"fps": 2.5}, "fps must be an integer"),
    ("preview", {"width": 2}, "width must be between 32 and 640"),
    ("thumbnail", {"at": "later"}, "at must be a number of seconds"),
    ("thumbnail", {"width": 4000}, "width must be between 16 and 1920"),
    ("nope", {}, "unknown job type 'nope': one of resize, convert, extract-audio, hls, thumbnail, storyboard, preview"),
])
def test_bad_params_are_refused_with_their_reason(job_type: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidJob, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        kinds.job_request(job_type, body, INFO)


def test_too_many_tiles_are_refused() -> None:
    with pytest.raises(InvalidJob, match="interval is too short: 240 tiles for 120 seconds, at most 200"):
        kinds.job_request("storyboard", {"interval": 0.5}, {**INFO, "duration": 120.0})
    assert kinds.job_request("storyboard", {}, {**INFO, "duration": 3600.0})[1] == {"interval": 36.0, "width": 160}
    assert storyboard.grid(25) == (10, 3) and storyboard.grid(3) == (3, 1)


MINIMAL_BODIES = {"resize": {"width": 320, "height": 180}, "convert": {"format": "webm"}}


def test_every_kind_declares_its_work() -> None:
    info = {**INFO, "audioCodec": "aac"}
    work = {name: kind.work(kinds.job_request(name, MINIMAL_BODIES.get(name, {}), info)[1], info)
            for name, kind in kinds.KINDS.items()}
    assert work["preview"] == 320 * 180 * 3.0 and work["thumbnail"] == 320 * 180
    assert work["storyboard"] == 60 * 160 * 90, "one 160x90 tile a second by default, for 60 s"
    assert work["extract-audio"] == 0 and all(w > 0 for name, w in work.items() if name != "extract-audio")
