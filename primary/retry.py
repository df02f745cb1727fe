"""Retry policy: a pure back-off function and the tracker that decides to give up."""

from __future__ import annotations

from dataclasses import dataclass


def compute_backoff_ms(attempt: int, initial_ms: int, factor: float = 2.0, cap_ms: int | None = None) -> int:
    """Delay before retrying after the failure of 0-based attempt ``attempt``: initial * factor**attempt."""
    delay = int(initial_ms * factor**attempt)
    return min(delay, cap_ms) if cap_ms is not None else delay


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    initial_ms: int = 2000
    factor: float = 2.0
    cap_ms: int | None = None


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_ms: int = 0


class RetryTracker:
    """Decides, per job, whether a failed attempt is retried and after how long."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def on_failure(self, attempts_made: int, max_retries: int, permanent: bool) -> RetryDecision:
        failed_attempt = attempts_made - 1  # 0-based
        if permanent or failed_attempt >= max_retries:
            return RetryDecision(retry=False)
        delay = compute_backoff_ms(failed_attempt, self.policy.initial_ms, self.policy.factor, self.policy.cap_ms)
        return RetryDecision(retry=True, delay_ms=delay)
