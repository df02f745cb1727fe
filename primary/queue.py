"""The job queue: higher priority first, FIFO within a priority level.

A push answers its position without walking the queue: the job joins the back of its level, so the jobs
ahead of it are the levels above plus its own level's length (exact, cancellations included, since a
removal leaves its level). ``position`` of any other job walks its level, and is for tests and tools.
"""

from __future__ import annotations

from cluster.protocol import Priority

_LEVELS = sorted(Priority, key=lambda p: p.rank)


class JobQueue:
    def __init__(self) -> None:
        # dicts as insertion-ordered sets: O(1) append, removal and pop-first
        self._levels: dict[Priority, dict[str, None]] = {p: {} for p in _LEVELS}
        self._priority_of: dict[str, Priority] = {}

    def __len__(self) -> int:
        return len(self._priority_of)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._priority_of

    def push(self, job_id: str, priority: Priority) -> int:
        """Queue a job at the back of its level; return its 1-based position."""
        if job_id in self._priority_of:
            raise ValueError(f"{job_id} is queued already")
        level = self._levels[priority]
        level[job_id] = None
        self._priority_of[job_id] = priority
        return sum(len(self._levels[p]) for p in _LEVELS if p.rank < priority.rank) + len(level)

    def pop(self) -> str | None:
        for level in _LEVELS:
            jobs = self._levels[level]
            if jobs:
                job_id = next(iter(jobs))
                self.remove(job_id)
                return job_id
        return None

    def remove(self, job_id: str) -> bool:
        priority = self._priority_of.pop(job_id, None)
        if priority is None:
            return False
        del self._levels[priority][job_id]
        return True

    def position(self, job_id: str) -> int:
        priority = self._priority_of[job_id]
        ahead = sum(len(self._levels[p]) for p in _LEVELS if p.rank < priority.rank)
        for index, queued in enumerate(self._levels[priority]):
            if queued == job_id:
                return ahead + index + 1
        raise KeyError(job_id)
