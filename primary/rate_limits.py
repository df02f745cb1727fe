"""Rate limits and connection caps, kept by the primary so that they hold across every web worker.

Rates: a token bucket per kind of request (upload, job, login) and per key (a user, an address). A
bucket holds a minute's worth of requests, so a burst up to the rate passes, and refills continuously;
an empty bucket answers how long until its next token (the HTTP ``Retry-After``). A rate of 0 is no limit.

WebSocket connections are counted per user across the web workers: each worker reports the opens and
closes of its connections, and the count of a worker that exits is forgotten with it.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from cluster.config import ClusterConfig
from primary.control import Handler, RequestError
from primary.job_ops import Caller

SECONDS_PER_MIN = 60.0
SWEEP_INTERVAL_S = 60.0
RATE_KINDS = ("upload", "job", "login")
WEB_KINDS = ("upload", "job")  # asked for by the web worker; logins are checked in login_check
MAX_BUCKETS = 100_000  # per kind; past it the longest-untouched bucket is forgotten (as if full again)


class TokenBuckets:
    """One bucket per key, all with the same rate; a key whose bucket is full needs no entry."""

    def __init__(self, rate_per_min: float, max_buckets: int = MAX_BUCKETS) -> None:
        self.capacity = max(1.0, rate_per_min)
        self._refill_per_s = rate_per_min / SECONDS_PER_MIN
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, time of that count)

    def wait_s(self, key: str, now: float) -> float:
        """0 when the key has a token now, else the seconds until it has one."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._refill_per_s

    def take(self, key: str, now: float) -> None:
        self._buckets[key] = (self._tokens(key, now) - 1.0, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)

    def sweep(self, now: float) -> None:
        """Forget the buckets that have filled up again, so idle keys cost no memory."""
        full = [key for key in self._buckets if self._tokens(key, now) >= self.capacity]
        for key in full:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self._refill_per_s)


class RateLimits:
    def __init__(self, per_min: dict[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = {kind: TokenBuckets(rate) for kind, rate in per_min.items() if rate > 0}
        self._clock = clock
        self._swept_at = clock()

    @classmethod
    def from_config(cls, config: ClusterConfig) -> RateLimits:
        return cls({"upload": config.upload_rate_per_min, "job": config.job_rate_per_min,
                    "login": config.login_rate_per_min})

    def handlers(self) -> dict[str, Handler]:
        return {"admit": self.admit}

    def take(self, kind: str, *keys: str) -> float:
        """Take a token from every key's bucket and answer 0; or, when one of them is empty, take none
        and answer the seconds until all of them have a token again."""
        buckets = self._buckets.get(kind)
        if buckets is None:
            return 0.0
        now = self._clock()
        self._sweep(now)
        wait_s = max(buckets.wait_s(key, now) for key in keys)
        if wait_s == 0.0:
            for key in keys:
                buckets.take(key, now)
        return wait_s

    def admit(self, args: dict[str, Any]) -> dict[str, Any]:
        """For the web worker, before it reads an upload or queues a job: ``{allowed, retryAfter}``."""
        caller = Caller(args)
        kind = args.get("kind")
        if kind not in WEB_KINDS:
            raise RequestError(400, f"kind must be one of {', '.join(WEB_KINDS)}")
        wait_s = self.take(kind, *limit_keys(caller.user_id, args.get("ip")))
        return {"allowed": wait_s == 0.0, "retryAfter": wait_s}

    def _sweep(self, now: float) -> None:
        if now - self._swept_at < SWEEP_INTERVAL_S:
            return
        self._swept_at = now
        for buckets in self._buckets.values():
            buckets.sweep(now)


def limit_keys(user: str, ip: object) -> tuple[str, ...]:
    """The keys a request counts against: its user, and its address when it has one."""
    return (f"user:{user}", f"ip:{ip}") if ip else (f"user:{user}",)


class WebSocketCounts:
    """Open WebSocket connections per web worker and user; at most ``max_per_user`` (0: any) per user."""

    def __init__(self, max_per_user: int) -> None:
        self._max_per_user = max_per_user
        self._open: dict[int, Counter[str]] = {}  # worker pid -> connections per user

    def handlers(self) -> dict[str, Handler]:
        return {"ws_open": self.open, "ws_close": self.close}

    def open(self, args: dict[str, Any]) -> bool:
        caller = Caller(args)
        if self._max_per_user and self.count(caller.user_id) >= self._max_per_user:
            raise RequestError(429, f"too many WebSocket connections: at most {self._max_per_user} per user")
        self._open.setdefault(int(args["pid"]), Counter())[caller.user_id] += 1
        return True

    def close(self, args: dict[str, Any]) -> bool:
        caller = Caller(args)
        counts = self._open.get(int(args["pid"]))
        if counts is not None and counts[caller.user_id] > 0:  # not when its worker was forgotten meanwhile
            counts[caller.user_id] -= 1
            if not counts[caller.user_id]:
                del counts[caller.user_id]
        return True

    def count(self, user_id: str) -> int:
        return sum(counts[user_id] for counts in self._open.values())

    def forget_worker(self, pid: int) -> None:
        """A worker that exited closed its connections with it, whether or not it could say so."""
        self._open.pop(pid, None)
