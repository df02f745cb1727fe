"""Back-off delays and the decision to retry a failed attempt or give up."""

from __future__ import annotations

import pytest

from primary.retry import RetryDecision, RetryPolicy, RetryTracker, compute_backoff_ms


@pytest.mark.parametrize(("attempt", "initial_ms", "factor", "cap_ms", "expected"), [
    (0, 2000, 2.0, None, 2000),
    (1, 2000, 2.0, None, 4000),
    (2, 2000, 2.0, None, 8000),
    (3, 2000, 2.0, None, 16000),
    (0, 10, 2.0, None, 10),
    (2, 10, 2.0, None, 40),
    (2, 1000, 3.0, None, 9000),
    (3, 100, 1.5, None, 337),  # 337.5, truncated to whole milliseconds
    (5, 2000, 1.0, None, 2000),  # factor 1: a constant delay
    (1, 2000, 2.0, 5000, 4000),  # under the cap
    (2, 2000, 2.0, 5000, 5000),  # capped
    (30, 2000, 2.0, 60000, 60000),
])
def test_compute_backoff_ms(attempt: int, initial_ms: int, factor: float, cap_ms: int | None, expected: int) -> None:
    delay = compute_backoff_ms(attempt, initial_ms, factor, cap_ms)
    assert delay == expected
    assert isinstance(delay, int)


def test_compute_backoff_default_factor_doubles_without_cap() -> None:
    assert [compute_backoff_ms(a, 2000) for a in range(4)] == [2000, 4000, 8000, 16000]


@pytest.mark.parametrize(("attempts_made", "expected"), [
    (1, RetryDecision(retry=True, delay_ms=2000)),
    (2, RetryDecision(retry=True, delay_ms=4000)),
    (3, RetryDecision(retry=True, delay_ms=8000)),
    (4, RetryDecision(retry=False)),
    (5, RetryDecision(retry=False)),
])
def test_three_retries_then_give_up(attempts_made: int, expected: RetryDecision) -> None:
    tracker = RetryTracker(RetryPolicy())
    assert tracker.on_failure("resize", attempts_made, max_retries=3, permanent=False) == expected


@pytest.mark.parametrize("attempts_made", [1, 2, 3])
def test_permanent_failure_gives_up_at_once(attempts_made: int) -> None:
    tracker = RetryTracker(RetryPolicy())
    assert tracker.on_failure("resize", attempts_made, max_retries=3, permanent=True) == RetryDecision(retry=False)


def test_max_retries_zero_never_retries() -> None:
    tracker = RetryTracker(RetryPolicy())
    assert tracker.on_failure("resize", 1, max_retries=0, permanent=False).retry is False


@pytest.mark.parametrize(("max_retries", "retried"), [(0, []), (1, [1]), (2, [1, 2]), (5, [1, 2, 3, 4, 5])])
def test_number_of_retries_follows_max_retries(max_retries: int, retried: list[int]) -> None:
    tracker = RetryTracker(RetryPolicy())
    decisions = {n: tracker.on_failure("resize", n, max_retries, permanent=False).retry for n in range(1, 8)}
    assert [n for n, retry in decisions.items() if retry] == retried


def test_tracker_uses_policy_initial_factor_and_cap() -> None:
    tracker = RetryTracker(RetryPolicy(initial_ms=1000, factor=3.0, cap_ms=5000))
    delays = [tracker.on_failure("resize", n, max_retries=4, permanent=False).delay_ms for n in range(1, 5)]
    assert delays == [1000, 3000, 5000, 5000]
