"""The job queue: higher priority first, FIFO within a priority level.

Positions are found without walking the queue. Each job holds a ticket, its level's count of pushes when
it joined: the jobs ahead of it in its level are the tickets between the level's head and its own, less
those removed from the middle since (cancellations: a short sorted list per level, pruned as the head
passes them). So ``position`` costs O(log k) for k such removals, and is exact.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict

from cluster.protocol import Priority

_LEVELS = sorted(Priority, key=lambda p: p.rank)


class _Level:
    __slots__ = ("holes", "jobs", "pushed")

    def __init__(self) -> None:
        # an ordered map job -> ticket: O(1) append, removal and pop-first (an OrderedDict, as a plain
        # dict's first key is found by skipping every key popped before it)
        self.jobs: OrderedDict[str, int] = OrderedDict()
        self.pushed = 0
        self.holes: list[int] = []  # tickets removed from the middle, behind the head still

    def push(self, job_id: str) -> None:
        self.pushed += 1
        self.jobs[job_id] = self.pushed

    def pop(self) -> str:
        job_id, _ticket = self.jobs.popitem(last=False)
        self._prune()
        return job_id

    def remove(self, job_id: str) -> None:
        head = next(iter(self.jobs))
        ticket = self.jobs.pop(job_id)
        if job_id != head:
            insort(self.holes, ticket)
        self._prune()

    def rank(self, job_id: str) -> int:
        """1-based, within the level."""
        ticket = self.jobs[job_id]
        head = next(iter(self.jobs.values()))
        return ticket - head + 1 - (bisect_left(self.holes, ticket) - bisect_left(self.holes, head))

    def _prune(self) -> None:
        if not self.jobs:
            self.holes.clear()
        elif self.holes:
            del self.holes[:bisect_left(self.holes, next(iter(self.jobs.values())))]


class JobQueue:
    def __init__(self) -> None:
        self._levels: dict[Priority, _Level] = {p: _Level() for p in _LEVELS}

    def __len__(self) -> int:
        return sum(len(level.jobs) for level in self._levels.values())

    def __contains__(self, job_id: object) -> bool:
        return any(job_id in level.jobs for level in self._levels.values())

    def push(self, job_id: str, priority: Priority) -> int:
        """Queue a job at the back of its level; return its 1-based position."""
        if job_id in self:
            raise ValueError(f"{job_id} is queued already")
        level = self._levels[priority]
        level.push(job_id)
        return self._ahead_of(priority) + len(level.jobs)

    def pop(self) -> str | None:
        for priority in _LEVELS:
            level = self._levels[priority]
            if level.jobs:
                return level.pop()
        return None

    def remove(self, job_id: str) -> bool:
        for level in self._levels.values():
            if job_id in level.jobs:
                level.remove(job_id)
                return True
        return False

    def position(self, job_id: str) -> int:
        """1-based, across the levels; KeyError for a job not queued."""
        for priority in _LEVELS:
            level = self._levels[priority]
            if job_id in level.jobs:
                return self._ahead_of(priority) + level.rank(job_id)
        raise KeyError(job_id)

    def _ahead_of(self, priority: Priority) -> int:
        return sum(len(self._levels[p].jobs) for p in _LEVELS if p.rank < priority.rank)
