"""Per-type concurrency limits and pauses: --job-policies parsing, and which types are held back."""

from __future__ import annotations

from collections import Counter

import pytest

from primary.retry import RetryPolicy, parse_policies
from primary.type_gates import TypeGates, parse_concurrency

KNOWN = ("resize", "convert", "extract-audio", "hls")


@pytest.mark.parametrize(("text", "limits"), [
    ("", {}),
    ("hls:concurrency=1", {"hls": 1}),
    ("hls:concurrency=1,resize:concurrency=2", {"hls": 1, "resize": 2}),
    ("hls:concurrency=1;resize:concurrency=2", {"hls": 1, "resize": 2}),
    ("resize:retries=5,concurrency=3,timeout_s=60;hls:timeout_s=7200", {"resize": 3}),
])
def test_concurrency_limits_are_read_from_either_form(text: str, limits: dict[str, int]) -> None:
    assert parse_concurrency(text, KNOWN) == limits


def test_the_retry_policy_reads_the_same_text_and_skips_concurrency() -> None:
    policies = parse_policies("hls:concurrency=1,timeout_s=7200,resize:retries=5", RetryPolicy())
    assert policies["hls"].timeout_s == 7200 and policies["hls"].max_retries == RetryPolicy().max_retries
    assert policies["resize"].max_retries == 5


@pytest.mark.parametrize(("text", "message"), [
    ("hsl:concurrency=1", "unknown job type 'hsl'"),
    ("hls:concurrency=0", "hls:concurrency must be a whole number of at least 1"),
    ("hls:concurrency=two", "hls:concurrency must be a whole number"),
    ("hls:concurrency=²", "hls:concurrency must be a whole number"),
    ("concurrency=1", "names no job type"),
    ("hls:concurrency", "is not SETTING=VALUE"),
    (":concurrency=1", "a job type is missing"),
])
def test_a_bad_policy_is_refused_with_its_mistake_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_concurrency(text, KNOWN)


def test_paused_types_and_types_at_their_limit_are_held_back() -> None:
    gates = TypeGates('["convert"]', {"hls": 1, "resize": 2})
    assert gates.blocked(Counter()) == {"convert"}
    assert gates.blocked(Counter({"hls": 1, "resize": 1})) == {"convert", "hls"}
    assert gates.blocked(Counter({"resize": 2})) == {"convert", "resize"}
    gates.paused.clear()
    assert gates.blocked(Counter({"hls": 0})) == set()
    assert TypeGates(gates.setting()).paused == set()


@pytest.mark.parametrize("setting", ["", "not json", '{"a": 1}', "7"])
def test_a_stored_setting_of_another_shape_pauses_nothing(setting: str) -> None:
    assert TypeGates(setting).paused == set()
