"""The job queue: higher priority first; within a priority level, users take turns.

Each level keeps a ring of the users with jobs queued in it, in the order they last had a start (or joined
the ring, for a user whose jobs were all gone): the next job is the first one of the user at the front,
and that user goes to the back. So a user with one job waits for at most one job of each other user.
Each user's jobs run in the order they were queued (``order``, the engine's queue order).

A type the caller blocks (paused, or at its concurrency limit) is skipped: each user keeps a queue per
type, and takes the oldest job of a type not blocked.

Positions are found without walking the jobs. A user's job of rank r (its place among that user's jobs in
the level) starts in turn r: before it go, of each user ahead of its user in the ring, min(n, r) jobs, and
of each user behind it min(n, r - 1), for n that user's queued jobs. Ranks come from tickets (a user's
count of pushes) less the removals from the middle (a short sorted list, pruned as the head passes). So
``position`` costs O(u + log k) for u users with jobs queued in the level and k such removals, and is exact
for the order jobs start in when no type is blocked.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, OrderedDict
from collections.abc import Container

from cluster.protocol import Priority

_LEVELS = sorted(Priority, key=lambda p: p.rank)


class _Tickets:
    """The jobs of one user in one level, oldest first, with exact ranks."""

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

    def remove(self, job_id: str) -> None:
        head = next(iter(self.jobs))
        ticket = self.jobs.pop(job_id)
        if job_id != head:
            insort(self.holes, ticket)
        self._prune()

    def rank(self, job_id: str) -> int:
        """1-based, among this user's jobs in the level."""
        ticket = self.jobs[job_id]
        head = next(iter(self.jobs.values()))
        return ticket - head + 1 - (bisect_left(self.holes, ticket) - bisect_left(self.holes, head))

    def _prune(self) -> None:
        if not self.jobs:
            self.holes.clear()
        elif self.holes:
            del self.holes[:bisect_left(self.holes, next(iter(self.jobs.values())))]


class _UserJobs:
    """One user's jobs in one level: all of them (for ranks), and a queue per type (for skipping)."""

    __slots__ = ("all", "by_type")

    def __init__(self) -> None:
        self.all = _Tickets()
        self.by_type: dict[str, OrderedDict[str, int]] = {}  # type -> job -> order

    def __len__(self) -> int:
        return len(self.all.jobs)

    def push(self, job_id: str, job_type: str, order: int) -> None:
        self.all.push(job_id)
        self.by_type.setdefault(job_type, OrderedDict())[job_id] = order

    def remove(self, job_id: str, job_type: str) -> None:
        self.all.remove(job_id)
        jobs = self.by_type[job_type]
        del jobs[job_id]
        if not jobs:
            del self.by_type[job_type]

    def first(self, blocked: Container[str]) -> tuple[str, str] | None:
        """(job, type): the oldest job of a type not blocked."""
        best: tuple[int, str, str] | None = None
        for job_type, jobs in self.by_type.items():
            if job_type in blocked:
                continue
            job_id, order = next(iter(jobs.items()))
            if best is None or order < best[0]:
                best = (order, job_id, job_type)
        return (best[1], best[2]) if best else None


class _Level:
    __slots__ = ("ring", "size")

    def __init__(self) -> None:
        self.ring: OrderedDict[str, _UserJobs] = OrderedDict()  # front: the user whose turn is next
        self.size = 0

    def push(self, job_id: str, owner: str, job_type: str, order: int) -> None:
        user = self.ring.get(owner)
        if user is None:
            user = self.ring[owner] = _UserJobs()  # a user joining goes to the back
        user.push(job_id, job_type, order)
        self.size += 1

    def pop(self, blocked: Container[str]) -> tuple[str, str] | None:
        for owner, user in self.ring.items():
            found = user.first(blocked)
            if found is not None:
                self._take(owner, user, *found)
                if owner in self.ring:
                    self.ring.move_to_end(owner)  # had its turn
                return found
        return None

    def remove(self, job_id: str, owner: str, job_type: str) -> None:
        self._take(owner, self.ring[owner], job_id, job_type)

    def _take(self, owner: str, user: _UserJobs, job_id: str, job_type: str) -> None:
        user.remove(job_id, job_type)
        self.size -= 1
        if not len(user):
            del self.ring[owner]

    def rank(self, job_id: str, owner: str) -> int:
        """1-based, within the level: the turns of the users ahead and behind, then this one."""
        turn = self.ring[owner].all.rank(job_id)
        ahead, behind = turn - 1, False  # this user's own jobs before it, then the others'
        for other, user in self.ring.items():
            if other == owner:
                behind = True
            else:
                ahead += min(len(user), turn - 1 if behind else turn)
        return ahead + 1


class JobQueue:
    def __init__(self) -> None:
        self._levels: dict[Priority, _Level] = {p: _Level() for p in _LEVELS}
        self._where: dict[str, tuple[Priority, str, str]] = {}  # job -> (level, owner, type)
        self._by_type: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def waiting(self, job_type: str) -> int:
        """How many jobs of this type are queued."""
        return self._by_type[job_type]

    def push(self, job_id: str, priority: Priority, owner: str = "", job_type: str = "", order: int = 0) -> int:
        """Queue a job behind its owner's others in its level; return its 1-based position. ``order`` ranks
        the owner's jobs across types (pushes of one owner come in increasing order)."""
        if job_id in self._where:
            raise ValueError(f"{job_id} is queued already")
        self._levels[priority].push(job_id, owner, job_type, order)
        self._where[job_id] = (priority, owner, job_type)
        self._by_type[job_type] += 1
        return self.position(job_id)

    def pop(self, blocked: Container[str] = ()) -> str | None:
        """The next job whose type is not in ``blocked``."""
        for priority in _LEVELS:
            level = self._levels[priority]
            if level.size:
                found = level.pop(blocked)
                if found is not None:
                    self._forget(found[0])
                    return found[0]
        return None

    def remove(self, job_id: str) -> bool:
        where = self._where.get(job_id)
        if where is None:
            return False
        priority, owner, job_type = where
        self._levels[priority].remove(job_id, owner, job_type)
        self._forget(job_id)
        return True

    def position(self, job_id: str) -> int:
        """1-based, across the levels; KeyError for a job not queued."""
        priority, owner, _type = self._where[job_id]
        ahead = sum(self._levels[p].size for p in _LEVELS if p.rank < priority.rank)
        return ahead + self._levels[priority].rank(job_id, owner)

    def _forget(self, job_id: str) -> None:
        job_type = self._where.pop(job_id)[2]
        self._by_type[job_type] -= 1
        if not self._by_type[job_type]:
            del self._by_type[job_type]
