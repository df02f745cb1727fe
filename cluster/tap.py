"""The tap: any ZMQ SUB on the primary's PUB socket; prints events and logs as JSON lines."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TextIO

import zmq

from cluster.config import ClusterConfig

POLL_MS = 200


def tap_lines(data_dir: Path, topic_prefix: str = "", endpoint: str | None = None):
    """Yield one JSON object per event or log line, with its topic, until the generator is closed."""
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, topic_prefix.encode())
    sub.connect(endpoint or ClusterConfig(data_dir=data_dir).endpoint("events"))
    try:
        while True:
            if not sub.poll(POLL_MS):
                yield None
                continue
            topic, body = sub.recv_multipart()
            yield {"topic": topic.decode(errors="replace"), **json.loads(body)}
    finally:
        sub.close(linger=0)
        context.term()


def run_tap(data_dir: Path, topic_prefix: str, endpoint: str | None, out: TextIO = sys.stdout) -> int:
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    for line in tap_lines(data_dir, topic_prefix, endpoint):
        if stopping:
            break
        if line is not None:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
    return 0
