"""The primary's PUB socket: numbers events, and carries the cluster's log lines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from cluster.protocol import LOG_TOPIC, Event

PUB_HWM = 100_000


class EventBus:
    """Sequence numbers grow by one per event across the cluster and survive restarts."""

    def __init__(self, context: zmq.Context, endpoint: str, last_seq: int, hwm: int = PUB_HWM) -> None:
        # A plain (not asyncio) socket: PUB never blocks, so publishing is a synchronous call.
        self._pub = context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.bind(endpoint)
        # log lines come from any thread (an S3 pool's, a library's through the standard library), and a ZMQ
        # socket used by two threads at once can crash the process: every send holds this (uncontended: ~0.1 us)
        self._lock = threading.Lock()
        self._seq = last_seq
        self.published = 0
        self.subscribers: list[Callable[[Event], None]] = []  # called after each event is sent (webhooks)

    @property
    def socket(self) -> zmq.Socket:
        """For binding one more endpoint (``--remote-bind``)."""
        return self._pub

    @property
    def last_seq(self) -> int:
        return self._seq

    def make(self, name: str, data: dict[str, Any]) -> Event:
        self._seq += 1
        return Event(name, self._seq, round(time.time() * 1000, 3), data)

    def publish(self, event: Event) -> None:
        frames = event.encode()
        with self._lock:
            self._pub.send_multipart(frames)
        self.published += 1
        for subscriber in self.subscribers:
            subscriber(event)

    def publish_log(self, line: bytes) -> None:
        with self._lock:
            self._pub.send_multipart([LOG_TOPIC.encode(), line])  # once closed: ZMQError, which the sink drops

    def close(self) -> None:
        with self._lock:
            self._pub.close(linger=0)
