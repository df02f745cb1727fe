"""Validation of job requests, shared by the web workers (before anything is queued)."""

from __future__ import annotations

from typing import Any

from cluster.media import VIDEO_FORMATS
from cluster.protocol import Priority

MAX_WIDTH = 7680  # 8K UHD
MAX_HEIGHT = 4320
MAX_TIMEOUT_S = 24 * 3600


class InvalidJob(ValueError):
    """A job request refused with 400."""


def resize_params(body: dict[str, Any]) -> dict[str, int]:
    width = _dimension(body.get("width"), "width", MAX_WIDTH)
    height = _dimension(body.get("height"), "height", MAX_HEIGHT)
    return {"width": width, "height": height}


def convert_params(target: Any, source_format: str) -> dict[str, str]:
    if not isinstance(target, str) or target.lower() not in VIDEO_FORMATS:
        raise InvalidJob(f"format must be one of {', '.join(VIDEO_FORMATS)}")
    target = target.lower()
    if target == source_format:
        raise InvalidJob(f"the video is already {target}")
    return {"format": target}


HLS_HEIGHTS = (240, 360, 720, 1080)
MAX_RENDITIONS = 6


def audio_params(video_info: dict[str, Any]) -> dict[str, Any]:
    if not video_info.get("audioCodec"):
        raise InvalidJob("the video has no audio to extract")
    return {}


def hls_params(body: dict[str, Any], source_height: int) -> dict[str, list[int]]:
    """Rendition heights (default 240p, 360p, 720p, 1080p), keeping those no taller than the source."""
    requested = body.get("renditions", list(HLS_HEIGHTS))
    if (not isinstance(requested, list) or not requested or len(requested) > MAX_RENDITIONS
            or not all(isinstance(h, int) and not isinstance(h, bool) for h in requested)):
        raise InvalidJob(f"renditions must be a list of 1 to {MAX_RENDITIONS} heights, e.g. [240, 360, 720]")
    for height in requested:
        _dimension(height, "a rendition height", MAX_HEIGHT)
    fitting = sorted({h for h in requested if h <= source_height})
    if not fitting:
        raise InvalidJob(f"no rendition fits a source {source_height} pixels tall")
    return {"renditions": fitting}


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
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{name} must be an integer")
    if value <= 0:
        raise InvalidJob(f"{name} must be positive")
    if value % 2:
        raise InvalidJob(f"{name} must be even (H.264 and VP9 need even dimensions)")
    if value > maximum:
        raise InvalidJob(f"{name} must be at most {maximum}")
    return value
