"""The tap: any ZMQ SUB on the primary's PUB socket; prints events and logs as JSON lines."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import zmq

from cluster.config import ClusterConfig
from cluster.protocol import LOG_TOPIC

POLL_MS = 200
LEVELS = ("debug", "info", "warning", "error", "critical")
ROLES = ("primary", "web", "executor")
_RANKS = {name: rank for rank, name in enumerate(LEVELS)} | {"warn": 2, "exception": 3, "fatal": 4}


@dataclass(frozen=True)
class LogFilter:
    """Which log lines to print: at ``level`` or above, of ``role`` only. Events always pass (the topic
    prefix, a subscription of the SUB socket, is what narrows them)."""

    level: str | None = None
    role: str | None = None

    def passes(self, line: dict[str, Any]) -> bool:
        if line.get("topic") != LOG_TOPIC:
            return True
        if self.role is not None and line.get("role") != self.role:
            return False
        if self.level is None:
            return True
        rank = _RANKS.get(str(line.get("level", "")).lower())
        return rank is None or rank >= _RANKS[self.level]  # a level we do not know is shown, not hidden


def tap_lines(data_dir: Path, topic_prefix: str = "", endpoint: str | None = None
              ) -> Iterator[dict[str, Any] | None]:
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


def run_tap(data_dir: Path, topic_prefix: str, endpoint: str | None, out: TextIO = sys.stdout,
            log_filter: LogFilter = LogFilter()) -> int:
    socket_path = ClusterConfig(data_dir=data_dir).run_dir / "events.ipc"
    if endpoint is None and not socket_path.exists():
        print(f"error: no cluster is running with the data dir {data_dir} (no {socket_path}); start one with "
              f"'run_cluster.py --data-dir {data_dir}' or give the same --data-dir as the cluster", file=sys.stderr)
        return 1
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    for line in tap_lines(data_dir, topic_prefix, endpoint):
        if stopping:
            break
        if line is not None and log_filter.passes(line):
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
    return 0
