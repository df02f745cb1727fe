"""The job queue: higher priority first, FIFO within a priority level.

A push answers its position without walking the queue: the job joins the back of its level, so the jobs
ahead of it are the levels above plus its own level's length (exact, cancellations included, since a
removal leaves its level). ``position`` of any other job walks its level, and is for tests and tools.
"""

from __future__ import annotations

from collections import OrderedDict

from cluster.protocol import Priority

_LEVELS = sorted(Priority, key=lambda p: p.rank)


class JobQueue:
    def __init__(self) -> None:
        # ordered sets: O(1) append, removal and pop-first (an OrderedDict, as a plain dict's first key is
        # found by skipping every key popped before it); no id -> level map besides: trying three levels
        # costs less than a million entries more
        self._levels: dict[Priority, OrderedDict[str, None]] = {p: OrderedDict() for p in _LEVELS}

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._levels.values())

    def __contains__(self, job_id: object) -> bool:
        return any(job_id in jobs for jobs in self._levels.values())

    def push(self, job_id: str, priority: Priority) -> int:
        """Queue a job at the back of its level; return its 1-based position."""
        if job_id in self:
            raise ValueError(f"{job_id} is queued already")
        level = self._levels[priority]
        level[job_id] = None
        return sum(len(self._levels[p]) for p in _LEVELS if p.rank < priority.rank) + len(level)

    def pop(self) -> str | None:
        for level in _LEVELS:
            jobs = self._levels[level]
            if jobs:
                return jobs.popitem(last=False)[0]
        return None

    def remove(self, job_id: str) -> bool:
        for jobs in self._levels.values():
            if job_id in jobs:
                del jobs[job_id]
                return True
        return False

    def position(self, job_id: str) -> int:
        ahead = 0
        for level in _LEVELS:
            jobs = self._levels[level]
            if job_id in jobs:
                for index, queued in enumerate(jobs):
                    if queued == job_id:
                        return ahead + index + 1
            ahead += len(jobs)
        raise KeyError(job_id)
