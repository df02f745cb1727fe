"""Uploads in flight on this web worker, capped in all and per user: each holds a connection, a temp file
and, while it is probed and given a thumbnail, an ffmpeg. Past a cap: 429 with ``Retry-After``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from workers.web.errors import too_many

RETRY_AFTER_S = 5


class UploadSlots:
    def __init__(self, per_worker: int, per_user: int) -> None:
        self._per_worker = per_worker  # 0: no cap
        self._per_user = per_user
        self._by_user: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return sum(self._by_user.values())

    @contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        if self._per_worker and self.in_flight >= self._per_worker:
            raise too_many(f"this worker has {self._per_worker} uploads in flight", RETRY_AFTER_S)
        if self._per_user and self._by_user[user_id] >= self._per_user:
            raise too_many(f"you have {self._per_user} uploads in flight", RETRY_AFTER_S)
        self._by_user[user_id] += 1
        try:
            yield
        finally:
            self._by_user[user_id] -= 1
            if not self._by_user[user_id]:
                del self._by_user[user_id]
