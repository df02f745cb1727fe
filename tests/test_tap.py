"""The tap prints every event and log line as JSON lines (item 9), filtered by topic, level and role."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.tap import LogFilter
from tests.harness import ROOT, Cluster, wait_until


class TapProcess:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "run_cluster.py", "tap", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(10)
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def connected_tap(cluster: Cluster, video_id: str, *args: str) -> TapProcess:
    """A SUB socket's subscription takes effect asynchronously: make events until the tap shows one."""
    tap = TapProcess("--data-dir", str(cluster.data_dir), *args)
    sizes = iter(range(32, 4000, 2))
    wait_until(lambda: cluster.resize(video_id, next(sizes), 32) and tap.lines, 15, "the tap to see an event",
               interval_s=0.2)
    return tap


def test_tap_prints_events_and_logs_of_every_process(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(executors=1)
    video_id = cluster.upload(clip)
    tap = connected_tap(cluster, video_id)
    try:
        cluster.upload(clip)  # the primary logs the new video
        wait_until(lambda: {"primary", "web", "executor"} <= {line.get("role") for line in tap.lines}
                   and any(line["topic"] == "job:completed" for line in tap.lines), 30,
                   "logs of every role and a completed job")
    finally:
        assert tap.stop() == 0
    events = [line for line in tap.lines if line["topic"].startswith("job:")]
    assert all(line["event"] == line["topic"] and "seq" in line and "data" in line for line in events)
    logs = [line for line in tap.lines if line["topic"] == "log"]
    assert all({"event", "level", "role", "pid", "timestamp"} <= set(line) for line in logs)


def test_tap_filter_narrows_to_a_topic_prefix(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    tap = connected_tap(cluster, video_id, "--filter", "job:")
    try:
        cluster.resize(video_id, 640, 480)
        wait_until(lambda: len(tap.lines) >= 2, 10, "a second event")
    finally:
        assert tap.stop() == 0
    assert {line["topic"] for line in tap.lines} == {"job:queued"}


@pytest.mark.parametrize("line, level, role, shown", [
    ({"topic": "job:queued", "event": "job:queued"}, "error", "web", True),  # events pass every log filter
    ({"topic": "log", "level": "info", "role": "web"}, "warning", None, False),
    ({"topic": "log", "level": "warning", "role": "web"}, "warning", None, True),
    ({"topic": "log", "level": "error", "role": "primary"}, "warning", None, True),
    ({"topic": "log", "level": "critical", "role": "primary"}, "error", None, True),
    ({"topic": "log", "level": "debug", "role": "primary"}, "info", None, False),
    ({"topic": "log", "level": "notice", "role": "primary"}, "error", None, True),  # unknown: shown, not hidden
    ({"topic": "log", "level": "info", "role": "executor"}, None, "web", False),
    ({"topic": "log", "level": "info", "role": "web"}, None, "web", True),
    ({"topic": "log", "level": "info", "role": "web"}, "warning", "web", False),
])
def test_log_filter(line: dict[str, Any], level: str | None, role: str | None, shown: bool) -> None:
    assert LogFilter(level, role).passes(line) is shown


def test_tap_level_keeps_warnings_and_above_and_every_event(cluster_factory: Callable[..., Cluster],
                                                            clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    tap = connected_tap(cluster, video_id, "--level", "warning")
    try:
        cluster.upload(clip)  # the primary logs the new video (info), before the failed login below
        assert httpx.post(cluster.url + "/api/login", json={"username": "admin", "password": "wrong"}).status_code == 401
        wait_until(lambda: any(line.get("event") == "login failed" for line in tap.lines), 10, "the warning")
    finally:
        assert tap.stop() == 0
    logs = [line for line in tap.lines if line["topic"] == "log"]
    assert logs and all(line["level"] in ("warning", "error", "critical") for line in logs)
    assert any(line["topic"] == "job:queued" for line in tap.lines), "events still pass"


def test_tap_role_keeps_that_role_s_logs_and_every_event(cluster_factory: Callable[..., Cluster],
                                                         clip: Path) -> None:
    cluster = cluster_factory(executors=0)
    video_id = cluster.upload(clip)
    tap = connected_tap(cluster, video_id, "--role", "web")
    try:
        cluster.upload(clip)  # the primary logs "video added", then the web worker "video uploaded"
        wait_until(lambda: any(line.get("event") == "video uploaded" for line in tap.lines), 10, "the web's log")
    finally:
        assert tap.stop() == 0
    logs = [line for line in tap.lines if line["topic"] == "log"]
    assert {line["role"] for line in logs} == {"web"}
    assert not any(line.get("event") == "video added" for line in logs)
    assert any(line["topic"] == "job:queued" for line in tap.lines), "events still pass"
