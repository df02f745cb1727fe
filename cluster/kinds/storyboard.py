"""``storyboard``: a sprite sheet of thumbnails every ``interval`` seconds and a WebVTT file mapping each
time range to its tile (``...#xywh=x,y,w,h``), for seek-bar previews. Both live under ``storyboard/``,
the VTT written and published last."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster import media
from cluster.jobspec import InvalidJob
from cluster.kinds.base import (
    Info,
    Job,
    Kind,
    asset_url,
    even_integer,
    fixed_download,
    image_size,
    output_entry,
    per_video,
    scaled_height,
    seconds,
)

if TYPE_CHECKING:
    from cluster.storage import Layout

DIRECTORY = "storyboard"
SPRITE = "sprite.jpg"
VTT = "storyboard.vtt"
SPRITE_QUERY = "type=storyboard"
VTT_QUERY = "type=storyboard-vtt"
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.5, 600.0
MIN_TILE_WIDTH, MAX_TILE_WIDTH, DEFAULT_TILE_WIDTH = 32, 480, 160
MAX_TILES = 200
MAX_COLUMNS = 10
MAX_SPRITE_PIXELS = 40_000_000  # decoded, a sprite this big is 120 MB of RGB in a browser


def _params(body: dict[str, Any], info: Info) -> dict[str, Any]:
    """``interval`` seconds between tiles (by default the shortest whole number of seconds giving at most
    100 tiles) and ``width`` of a tile; at most MAX_TILES tiles and MAX_SPRITE_PIXELS in all."""
    duration = float(info.get("duration") or 0.0)
    interval = seconds(body, "interval", MIN_INTERVAL_S, MAX_INTERVAL_S,
                       default=float(min(MAX_INTERVAL_S, max(1, math.ceil(duration / 100)))))
    width = even_integer(body, "width", MIN_TILE_WIDTH, MAX_TILE_WIDTH, default=DEFAULT_TILE_WIDTH)
    count = tiles(interval, duration)
    if count > MAX_TILES:
        raise InvalidJob(f"interval is too short: {count} tiles for {duration:g} seconds, at most {MAX_TILES} "
                         f"(an interval of {math.ceil(duration / MAX_TILES * 10) / 10:g} seconds or more)")
    columns, rows = grid(count)
    if columns * rows * width * scaled_height(width, info) > MAX_SPRITE_PIXELS:
        raise InvalidJob(f"the sprite would be too large: narrower tiles or a longer interval "
                         f"(at most {MAX_SPRITE_PIXELS} pixels)")
    return {"interval": interval, "width": width}


def tiles(interval: float, duration: float) -> int:
    """One tile per started interval: the one of [n x interval, (n + 1) x interval)."""
    return max(1, math.ceil(round(duration / interval, 6)))


def grid(count: int) -> tuple[int, int]:
    columns = min(MAX_COLUMNS, count)
    return columns, math.ceil(count / columns)


def _layout(job: Job) -> tuple[float, int, int, int, int, int]:
    """interval, tile count, columns, rows, tile width and height, for this source as probed now."""
    interval, width = float(job.params["interval"]), int(job.params["width"])
    count = tiles(interval, job.info.duration_s)
    columns, rows = grid(count)
    return interval, count, columns, rows, width, scaled_height(width, job.info.to_dict())


def storyboard_command(job: Job, directory: Path) -> list[str]:
    interval, _count, columns, rows, width, height = _layout(job)
    # fps=1/interval keeps one frame of each interval (rounding to the nearest output time, the one near
    # its middle); tile fills a row after another, flushing a partly filled sheet at the end; one sheet
    # only (a frame past the grid, from fps's rounding at the end, is dropped)
    return [
        job.ffmpeg, *media.BASE_ARGS, *media.PROGRESS_ARGS, *media.input_args(job.source, job.source_fmt),
        "-map", "0:v:0", "-an", "-vf", f"fps=1/{interval:g},scale={width}:{height},setsar=1,tile={columns}x{rows}",
        "-frames:v", "1", "-q:v", "4", *media.threads_args(job.threads),
        "-update", "1", "-f", "image2", "-c:v", "mjpeg", os.fspath(directory / SPRITE),
    ]


def vtt(job: Job) -> str:
    """The cues, one per tile, each naming its tile in the sprite by an absolute URL (the VTT is served
    through the web worker, the sprite with the session's cookie, wherever the files are stored)."""
    interval, count, columns, _rows, width, height = _layout(job)
    sprite = f"{asset_url(job.video_id, SPRITE_QUERY)}&v={job.params['interval']:g}-{width}"  # a new sheet, a new URL
    lines = ["WEBVTT", ""]
    for n in range(count):
        start, end = n * interval, min((n + 1) * interval, job.info.duration_s)
        x, y = (n % columns) * width, (n // columns) * height
        lines += [f"{_timestamp(start)} --> {_timestamp(end)}", f"{sprite}#xywh={x},{y},{width},{height}", ""]
    return "\n".join(lines)


def _timestamp(seconds_: float) -> str:
    millis = round(seconds_ * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def _finish(job: Job, directory: Path) -> dict[str, Any]:
    interval, count, columns, rows, width, height = _layout(job)
    sheet_width, sheet_height = image_size(directory / SPRITE)
    if (sheet_width, sheet_height) != (columns * width, rows * height):
        raise media.MediaError(f"the sprite is {sheet_width}x{sheet_height}, not {columns * width}x{rows * height}")
    (directory / VTT).write_text(vtt(job))
    sprite_url, vtt_url = asset_url(job.video_id, SPRITE_QUERY), asset_url(job.video_id, VTT_QUERY)
    return {"url": vtt_url, "sprite": sprite_url, "interval": interval, "tiles": count, "columns": columns,
            "rows": rows, "tileWidth": width, "tileHeight": height,
            "outputs": [output_entry(SPRITE, sprite_url, directory / SPRITE),
                        output_entry(VTT, vtt_url, directory / VTT)]}


def _directory(layout: Layout, video_id: str) -> Path:
    return layout.video_dir(video_id) / DIRECTORY


def _work(params: dict[str, Any], info: Info) -> float:
    width = int(params["width"])
    return tiles(float(params["interval"]), float(info.get("duration") or 0.0)) * width * scaled_height(width, info)


KIND = Kind(
    name="storyboard",
    params=_params,
    work=_work,
    target=per_video(_directory),
    command=storyboard_command,
    finish=_finish,
    summary_field="storyboard",
    last=VTT,  # a directory
    partial_tag=lambda params: f"{params['interval']:g}-{params['width']}".replace(".", "_"),
    downloads={"storyboard": fixed_download(lambda layout, video_id: _directory(layout, video_id) / SPRITE),
               "storyboard-vtt": fixed_download(lambda layout, video_id: _directory(layout, video_id) / VTT,
                                                through_worker=True)},
)
