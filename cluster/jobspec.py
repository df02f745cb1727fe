"""Validation of job requests, shared by the primary (before anything is queued) and the executors.

What a route accepts an executor can run: the rules for sizes, fits, formats and renditions live
here and in ``cluster.hls`` / ``cluster.media``, and both sides call the same functions.
"""

from __future__ import annotations

from typing import Any

from cluster import hls
from cluster.media import DEFAULT_FIT, FITS, VIDEO_FORMATS, MediaError
from cluster.protocol import Priority

MIN_SIZE = 16  # pixels, each side of a resize
MAX_WIDTH = 7680  # 8K UHD
MAX_HEIGHT = 4320
MAX_TIMEOUT_S = 24 * 3600
HLS_HEIGHTS = hls.DEFAULT_HEIGHTS
MAX_RENDITIONS = hls.MAX_RENDITIONS


class InvalidJob(ValueError):
    """A job request refused with 400."""


def resize_params(body: dict[str, Any]) -> dict[str, Any]:
    """Width, height and ``fit`` (contain by default; it is part of the params, so dedupe tells fits apart)."""
    width = _dimension(body.get("width"), "width", MAX_WIDTH)
    height = _dimension(body.get("height"), "height", MAX_HEIGHT)
    fit = body.get("fit", DEFAULT_FIT)
    if not isinstance(fit, str) or fit not in FITS:
        raise InvalidJob(f"fit must be one of {', '.join(FITS)}")
    return {"width": width, "height": height, "fit": fit}


def convert_params(target: Any, source_format: str) -> dict[str, str]:
    if target is None:
        raise InvalidJob(f"format is required: one of {', '.join(VIDEO_FORMATS)}")
    if not isinstance(target, str) or target.lower() not in VIDEO_FORMATS:
        raise InvalidJob(f"format must be one of {', '.join(VIDEO_FORMATS)}")
    target = target.lower()
    if target == source_format:
        raise InvalidJob(f"the video is already {target}")
    return {"format": target}


def audio_params(video_info: dict[str, Any]) -> dict[str, Any]:
    if not video_info.get("audioCodec"):
        raise InvalidJob("the video has no audio to extract")
    return {}


def hls_params(body: dict[str, Any], video_info: dict[str, Any]) -> dict[str, list[int]]:
    """Rendition heights (default 240p, 360p, 720p, 1080p), keeping those no taller than the source."""
    return {"renditions": [r.height for r in hls_ladder(body.get("renditions", list(HLS_HEIGHTS)), video_info)]}


def hls_ladder(requested: Any, video_info: dict[str, Any]) -> list[hls.Rendition]:
    """The renditions of a request that fit the source; the executor runs exactly these."""
    width, height = int(video_info["width"]), int(video_info["height"])
    try:
        ladder = hls.ladder(height, hls.requested_heights(requested), source_width=width)
    except MediaError as e:
        raise InvalidJob(str(e)) from e
    if not ladder:
        raise InvalidJob(f"no rendition fits a source {height} pixels tall")
    return ladder


def job_work(job_type: str, params: dict[str, Any], video_info: dict[str, Any]) -> float:
    """Output pixels per frame x seconds (summed over an HLS ladder): what a job costs, roughly (each kind's
    own estimate, `cluster.kinds`)."""
    from cluster.kinds import kind  # the kinds use these rules: imported when first needed

    return kind(job_type).work(params, video_info)


def check_work(job_type: str, params: dict[str, Any], video_info: dict[str, Any], max_work: float) -> None:
    work = job_work(job_type, params, video_info)
    if work > max_work:
        raise InvalidJob(f"the job is too large: {work:.3g} output pixels x seconds, at most {max_work:.3g} "
                         "(a smaller size, fewer renditions or a shorter video)")


def job_options(body: dict[str, Any]) -> dict[str, Any]:
    """The optional ``priority`` and ``timeout`` (seconds) every job route takes."""
    options: dict[str, Any] = {}
    priority = body.get("priority")
    if priority is not None:
        if not isinstance(priority, str) or priority not in {p.value for p in Priority}:
            raise InvalidJob("priority must be high, normal or low")
        options["priority"] = priority
    timeout = body.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            raise InvalidJob(f"timeout must be a number of seconds between 0 and {MAX_TIMEOUT_S}")
        options["timeout"] = float(timeout)
    return options


def _dimension(value: Any, name: str, maximum: int) -> int:
    if value is None:
        raise InvalidJob(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer")
    if value <= 0:
        raise InvalidJob(f"{name} must be positive")
    if value < MIN_SIZE:
        raise InvalidJob(f"{name} must be at least {MIN_SIZE}")
    if value % 2:
        raise InvalidJob(f"{name} must be even (H.264 and VP9 need even dimensions)")
    if value > maximum:
        raise InvalidJob(f"{name} must be at most {maximum}")
    return value
