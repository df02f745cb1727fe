"""The job record the primary keeps in memory and in the store."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from cluster.protocol import JobState, Priority


def now_ms() -> float:
    return round(time.time() * 1000, 3)


class JobIdFactory:
    """Ids ``<type>-<videoId>-<epoch ms>``, unique even within one millisecond."""

    def __init__(self) -> None:
        self._last_ms = 0

    def make(self, job_type: str, video_id: str) -> str:
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return f"{job_type}-{video_id}-{ms}"

    def observe(self, job_id: str) -> None:
        """Account for ids made by an earlier run of the primary."""
        tail = job_id.rsplit("-", 1)[-1]
        if tail.isdigit():
            self._last_ms = max(self._last_ms, int(tail))


@dataclass(slots=True)  # no per-job __dict__: a million queued jobs stay well under a GiB
class Job:
    id: str
    type: str
    video_id: str
    params: dict[str, Any]
    owner: str = ""
    state: JobState = JobState.QUEUED
    priority: Priority = Priority.NORMAL
    attempts: int = 0  # attempts started so far
    max_retries: int = 3
    timeout_s: float = 3600.0
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: float = field(default_factory=now_ms)
    queued_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    cancelled_at: float | None = None
    retry_at: float | None = None
    queue_order: int = 0
    run_id: str | None = None
    executor: str | None = None

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.type, self.video_id, self.params)

    def public(self) -> dict[str, Any]:
        """The job as the HTTP API shows it."""
        return {
            "jobId": self.id,
            "type": self.type,
            "videoId": self.video_id,
            "params": self.params,
            "state": self.state.value,
            "priority": self.priority.value,
            "attempts": self.attempts,
            "maxRetries": self.max_retries,
            "timeout": self.timeout_s,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "createdAt": self.created_at,
            "queuedAt": self.queued_at,
            "startedAt": self.started_at,
            "completedAt": self.completed_at,
            "failedAt": self.failed_at,
            "cancelledAt": self.cancelled_at,
            "retryAt": self.retry_at,
            "executor": self.executor,
        }


@dataclass
class Attempt:
    """One run of a job on an executor, kept for the dead-letter list and the statistics."""

    job_id: str
    number: int  # 1-based
    executor: str | None
    queued_at: float | None
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # completed, failed, timeout, stalled, cancelled
    error: str | None = None
    command: str | None = None
    stderr: str | None = None

    def public(self, admin: bool = False) -> dict[str, Any]:
        """The ffmpeg command line and stderr (server paths, details) only for administrators."""
        shown = {"attempt": self.number, "executor": self.executor, "startedAt": self.started_at,
                 "endedAt": self.ended_at, "outcome": self.outcome, "error": self.error}
        return {**shown, "command": self.command, "stderrTail": self.stderr} if admin else shown



def dedupe_key(job_type: str, video_id: str, params: dict[str, Any]) -> str:
    return f"{job_type}|{video_id}|{json.dumps(params, sort_keys=True)}"
