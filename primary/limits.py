"""Failure limits the primary keeps for the whole cluster (so they hold across web workers).

Failed logins are counted per (name, address) and per address, never per name alone: a stranger's
guesses slow down the stranger's address, not the account everywhere, and one user's typos do not
lock out another user behind the same address (the per-address bound is the looser one).
"""

from __future__ import annotations

import collections
import time

from cluster.config import ClusterConfig

MAX_KEYS = 100_000  # per table: memory stays bounded however many names and addresses fail


class FailureLimiter:
    """Allows at most ``max_failures`` failures per key within ``window_s``; then answers how long to wait.
    At most ``max_keys`` keys are remembered: the one that failed longest ago goes first."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = MAX_KEYS) -> None:
        self._max = max_failures
        self._window_s = window_s
        self._max_keys = max_keys
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def retry_after_s(self, *keys: str) -> float:
        """0 when every key may try again now, else the seconds until the oldest failure expires."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            failures = self._recent(key, now)
            if self._max and len(failures) >= self._max:
                wait = max(wait, failures[0] + self._window_s - now)
        return wait

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            failures = self._failures.setdefault(key, collections.deque(maxlen=max(1, self._max)))
            failures.append(now)
            self._failures.move_to_end(key)
            self._recent(key, now)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        failures = self._failures.get(key, collections.deque())
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures


class LoginFailures:
    """The two tables of failed logins: per (name, address), tight; per address, looser."""

    def __init__(self, per_name_and_address: int, per_address: int, window_s: float,
                 max_keys: int = MAX_KEYS) -> None:
        self._pairs = FailureLimiter(per_name_and_address, window_s, max_keys)
        self._addresses = FailureLimiter(per_address, window_s, max_keys)

    @classmethod
    def from_config(cls, config: ClusterConfig) -> LoginFailures:
        return cls(config.login_max_failures, config.login_max_failures_per_address, config.login_window_s)

    def retry_after_s(self, name: str, address: str) -> float:
        return max(self._pairs.retry_after_s(pair_key(name, address)), self._addresses.retry_after_s(address))

    def fail(self, name: str, address: str) -> None:
        self._pairs.fail(pair_key(name, address))
        self._addresses.fail(address)

    def succeed(self, name: str, address: str) -> None:
        """The pair's count starts again; the address keeps its failures (a valid login cannot wash them)."""
        self._pairs.succeed(pair_key(name, address))

    def sizes(self) -> tuple[int, int]:
        return len(self._pairs), len(self._addresses)


def pair_key(name: str, address: str) -> str:
    return f"{address}\x00{name}"
