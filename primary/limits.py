"""Failure limits the primary keeps for the whole cluster (so they hold across web workers)."""

from __future__ import annotations

import collections
import time


class FailureLimiter:
    """Allows at most ``max_failures`` failures per key within ``window_s``; then answers how long to wait."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self._max = max_failures
        self._window_s = window_s
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after_s(self, *keys: str) -> float:
        """0 when every key may try again now, else the seconds until the oldest failure expires."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            failures = self._recent(key, now)
            if len(failures) >= self._max:
                wait = max(wait, failures[0] + self._window_s - now)
        return wait

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            self._failures.setdefault(key, collections.deque()).append(now)
            self._recent(key, now)

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        failures = self._failures.get(key, collections.deque())
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures
