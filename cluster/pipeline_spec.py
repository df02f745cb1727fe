"""The shape of a pipeline request, and the named pipelines of the config (``--pipeline NAME=STAGES``).

A named pipeline is ``NAME=STAGE,STAGE,...``; a stage is its job type, then ``:key=value`` for each
parameter, then ``+review`` when it waits for an approval once completed:
``web=resize:width=320:height=240,convert:format=webm+review,hls:renditions=240/360``. A value of digits is a
number, ``true``/``false`` a boolean, values separated by ``/`` a list (``240/`` a list of one). Each stage's parameters are checked
against its video as any job request is, when the pipeline starts; here only the shape is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MAX_STAGES = 10
MAX_NAME = 32
MAX_TYPE = 32
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]*")
TYPE = re.compile(r"[a-z][a-z0-9-]*")
REVIEW_SUFFIX = "+review"
RESERVED = ("type", "review", "videoId")  # a stage's own fields, never a job parameter


class InvalidPipeline(ValueError):
    """A pipeline refused: 400 for a request, an error at start for the config."""


def check_stages(stages: Any) -> list[dict[str, Any]]:
    """A list of 1 to MAX_STAGES objects, each with a ``type`` and an optional boolean ``review``."""
    if not isinstance(stages, list) or not stages:
        raise InvalidPipeline("stages must be a non-empty list of {type, ...params, review?}")
    if len(stages) > MAX_STAGES:
        raise InvalidPipeline(f"a pipeline has at most {MAX_STAGES} stages")
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise InvalidPipeline(f"stage {index}: must be an object {{type, ...params, review?}}")
        if not isinstance(stage.get("type"), str) or not stage["type"]:
            raise InvalidPipeline(f"stage {index}: type is required")
        if len(stage["type"]) > MAX_TYPE or not TYPE.fullmatch(stage["type"]):
            raise InvalidPipeline(f"stage {index}: type must be the name of a job type, such as resize")
        if not isinstance(stage.get("review", False), bool):
            raise InvalidPipeline(f"stage {index}: review must be true or false")
        if "videoId" in stage:
            raise InvalidPipeline(f"stage {index}: videoId belongs to the pipeline, not to a stage")
    return stages


def parse_named(items: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """``--pipeline`` values -> name -> stages; InvalidPipeline names what is wrong."""
    named: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        name, sep, stages = item.partition("=")
        name = name.strip()
        if not sep or not NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise InvalidPipeline(f"--pipeline {item!r}: expected NAME=STAGE,STAGE,... with NAME of lower-case "
                                  f"letters, digits, - and _ (at most {MAX_NAME})")
        if name in named:
            raise InvalidPipeline(f"--pipeline {name!r} is given twice")
        try:
            named[name] = check_stages([_stage(text.strip()) for text in stages.split(",")])
        except InvalidPipeline as e:
            raise InvalidPipeline(f"--pipeline {name!r}: {e}") from e
    return named


def _stage(text: str) -> dict[str, Any]:
    review = text.endswith(REVIEW_SUFFIX)
    if review:
        text = text[: -len(REVIEW_SUFFIX)]
    job_type, *pairs = text.split(":")
    if not TYPE.fullmatch(job_type):
        raise InvalidPipeline(f"{text!r}: a stage is TYPE[:key=value...][+review]")
    stage: dict[str, Any] = {"type": job_type}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not KEY.fullmatch(key) or not value:
            raise InvalidPipeline(f"{text!r}: {pair!r} is not key=value")
        if key in RESERVED or key in stage:
            raise InvalidPipeline(f"{text!r}: {key} may not be given here")
        stage[key] = [_value(v) for v in value.split("/") if v] if "/" in value else _value(value)
    if review:
        stage["review"] = True
    return stage


def _value(text: str) -> Any:
    if re.fullmatch(r"-?\d{1,15}", text):
        return int(text)
    if re.fullmatch(r"-?\d{1,15}\.\d{1,15}", text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text
