"""Validation of job requests: every refusal is an InvalidJob (a 400), never another exception."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cluster.config import ClusterConfig
from cluster.jobspec import (
    MAX_TIMEOUT_S,
    InvalidJob,
    check_work,
    convert_params,
    hls_ladder,
    hls_params,
    job_options,
    job_work,
    resize_params,
)
from cluster.media import VIDEO_FORMATS


@pytest.mark.parametrize(("body", "expected"), [
    ({"width": 640, "height": 360}, {"width": 640, "height": 360, "fit": "contain"}),
    ({"width": 16, "height": 16}, {"width": 16, "height": 16, "fit": "contain"}),
    ({"width": 7680, "height": 4320}, {"width": 7680, "height": 4320, "fit": "contain"}),
    ({"width": 1920, "height": 1080, "videoId": "abc", "priority": "high"},
     {"width": 1920, "height": 1080, "fit": "contain"}),
    ({"width": 320, "height": 240, "fit": "cover"}, {"width": 320, "height": 240, "fit": "cover"}),
    ({"width": 320, "height": 240, "fit": "stretch"}, {"width": 320, "height": 240, "fit": "stretch"}),
])
def test_resize_params_accepts_even_positive_dimensions(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert resize_params(body) == expected


@pytest.mark.parametrize(("body", "message"), [
    ({"width": 0, "height": 360}, "width must be positive"),
    ({"width": 640, "height": 0}, "height must be positive"),
    ({"width": -640, "height": 360}, "width must be positive"),
    ({"width": 641, "height": 360}, "width must be even"),
    ({"width": 640, "height": 361}, "height must be even"),
    ({"width": 7682, "height": 360}, "width must be at most 7680"),
    ({"width": 640, "height": 4322}, "height must be at most 4320"),
    ({"width": 4320, "height": 7680}, "height must be at most 4320"),  # width and height are not interchangeable
    ({"width": "640", "height": 360}, "width must be an integer"),
    ({"width": 640.0, "height": 360}, "width must be an integer"),
    ({"width": 640, "height": None}, "height is required"),
    ({"width": True, "height": 360}, "width must be an integer"),
    ({"width": 640, "height": False}, "height must be an integer"),
    ({"height": 360}, "width is required"),
    ({"width": 640}, "height is required"),
    ({}, "width is required"),
    ({"width": 14, "height": 240}, "width must be at least 16"),
    ({"width": 320, "height": 2}, "height must be at least 16"),
    ({"width": 320, "height": 240, "fit": "fill"}, "fit must be one of contain, cover, stretch"),
    ({"width": 320, "height": 240, "fit": None}, "fit must be one of"),
    ({"width": 320, "height": 240, "fit": ["cover"]}, "fit must be one of"),
])
def test_resize_params_refuses(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        resize_params(body)


@pytest.mark.parametrize(("target", "source", "expected"), [
    ("webm", "mp4", "webm"),
    ("WebM", "mp4", "webm"),
    ("MKV", "avi", "mkv"),
    ("mp4", "mov", "mp4"),
])
def test_convert_params_accepts_other_formats_case_insensitively(target: str, source: str, expected: str) -> None:
    assert convert_params(target, source) == {"format": expected}


@pytest.mark.parametrize("target", VIDEO_FORMATS)
def test_convert_params_accepts_every_known_format_but_the_source(target: str) -> None:
    source = "flv" if target != "flv" else "mp4"
    assert convert_params(target, source) == {"format": target}


@pytest.mark.parametrize(("target", "source", "message"), [
    ("gif", "mp4", "format must be one of"),
    ("", "mp4", "format must be one of"),
    (None, "mp4", "format is required: one of"),
    (4, "mp4", "format must be one of"),
    (["mp4"], "mov", "format must be one of"),
    ("mp4", "mp4", "already mp4"),
    ("MP4", "mp4", "already mp4"),
    ("Mkv", "mkv", "already mkv"),
])
def test_convert_params_refuses(target: Any, source: str, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        convert_params(target, source)


@pytest.mark.parametrize(("body", "expected"), [
    ({}, {}),
    ({"priority": None, "timeout": None}, {}),
    ({"priority": "high"}, {"priority": "high"}),
    ({"priority": "normal"}, {"priority": "normal"}),
    ({"priority": "low"}, {"priority": "low"}),
    ({"timeout": 1}, {"timeout": 1.0}),
    ({"timeout": 0.5}, {"timeout": 0.5}),
    ({"timeout": MAX_TIMEOUT_S}, {"timeout": float(MAX_TIMEOUT_S)}),
    ({"priority": "low", "timeout": 90, "width": 640}, {"priority": "low", "timeout": 90.0}),
])
def test_job_options_accepts(body: dict[str, Any], expected: dict[str, Any]) -> None:
    options = job_options(body)
    assert options == expected
    if "timeout" in options:
        assert type(options["timeout"]) is float


@pytest.mark.parametrize("priority", ["HIGH", "urgent", "", 1, 0, True])
def test_job_options_refuses_unknown_priority(priority: Any) -> None:
    with pytest.raises(InvalidJob, match="priority must be high, normal or low"):
        job_options({"priority": priority})


@pytest.mark.parametrize("priority", [["high"], {"level": "high"}])
def test_job_options_refuses_unhashable_priority(priority: Any) -> None:
    with pytest.raises(InvalidJob):
        job_options({"priority": priority})


@pytest.mark.parametrize("timeout", [0, 0.0, -1, MAX_TIMEOUT_S + 1, MAX_TIMEOUT_S + 0.001, math.inf, math.nan,
                                     "60", True, False, [60], {"s": 60}])
def test_job_options_refuses_bad_timeout(timeout: Any) -> None:
    with pytest.raises(InvalidJob, match="timeout must be a number of seconds"):
        job_options({"timeout": timeout})


# --- renditions and work: the rules the executor runs by --------------------------------

HD = {"width": 1280, "height": 720, "duration": 600.0}


@pytest.mark.parametrize(("body", "expected"), [
    ({}, [240, 360, 720]),  # the default ladder, cut at the source's height
    ({"renditions": [720, 240, 240]}, [240, 720]),
    ({"renditions": [480, 1080]}, [480]),
])
def test_hls_params_keep_the_renditions_the_executor_makes(body: dict[str, Any], expected: list[int]) -> None:
    params = hls_params(body, HD)
    assert params == {"renditions": expected}
    assert [r.height for r in hls_ladder(params["renditions"], HD)] == expected


@pytest.mark.parametrize(("renditions", "message"), [
    ([540], "unsupported rendition height 540"),
    ([250, 360], "unsupported rendition height 250"),
    ([1080], "no rendition fits a source 720 pixels tall"),
    ([], "renditions must be a list"),
    ("720", "renditions must be a list"),
    ([True], "renditions must be a list"),
    ([240] * 6, "renditions must be a list"),
])
def test_hls_params_refuse_what_cannot_run(renditions: Any, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        hls_params({"renditions": renditions}, HD)


def test_the_default_work_bound_takes_8k_for_ten_minutes_not_a_tiny_source_blown_up_for_ten_hours() -> None:
    bound = ClusterConfig().max_job_work
    uhd = {"width": 7680, "height": 4320, "duration": 600.0}
    check_work("convert", {"format": "mkv"}, uhd, bound)
    check_work("resize", {"width": 7680, "height": 4320, "fit": "cover"}, uhd, bound)
    check_work("hls", {"renditions": [240, 360, 720, 1080]}, {**HD, "duration": 3 * 3600.0}, bound)
    tiny_and_long = {"width": 16, "height": 16, "duration": 10 * 3600.0}
    with pytest.raises(InvalidJob, match="the job is too large: 1.19e\\+12"):
        check_work("resize", {"width": 7680, "height": 4320, "fit": "contain"}, tiny_and_long, bound)
    assert job_work("extract-audio", {}, tiny_and_long) == 0


def test_hls_work_sums_its_renditions() -> None:
    work = job_work("hls", {"renditions": [240, 720]}, {**HD, "duration": 2.0})
    assert work == (426 * 240 + 1280 * 720) * 2.0
