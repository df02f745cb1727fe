"""The job queue: higher priority first; within a priority level, users take turns.

Each level keeps a ring of the users with jobs queued in it, in the order they last had a start (or joined
the ring, for a user whose jobs were all gone): the next job is the first one of the user at the front,
and that user goes to the back. So a user with one job waits for at most one job of each other user.
Each user's jobs run in the order they were pushed (the engine pushes them in queue order, also when it
rebuilds the queue after a restart).

A type the caller blocks (paused, or at its concurrency limit) is skipped: each user keeps a queue per
type, and takes the oldest job of a type not blocked.

Positions are found without walking the jobs. A user's job of rank r (its place among that user's jobs in
the level) starts in turn r: before it go, of each user ahead of its user in the ring, min(n, r) jobs, and
of each user behind it min(n, r - 1), for n that user's queued jobs. Ranks come from tickets (a user's
count of pushes) less the removals from the middle (a short sorted list, pruned as the head passes). So
``position`` costs O(u + t + log k) for u users with jobs queued in the level, t job types and k such
removals, and is exact for the order jobs start in when no type is blocked (a blocked type's jobs still
count in the positions of the jobs behind them). The position ``push`` returns needs no rank (the job is its
user's newest), and none of the ring for a user's first job in the level: it is at the back.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, OrderedDict
from collections.abc import Container

from cluster.protocol import Priority

_LEVELS = sorted(Priority, key=lambda p: p.rank)


class _UserJobs:
    """One user's jobs in one level: a queue per type, each job with its ticket (the user's count of pushes
    when it came: its order among the user's jobs), and the tickets removed from the middle."""

    __slots__ = ("by_type", "count", "holes", "owner", "priority", "pushed")

    def __init__(self, priority: Priority, owner: str) -> None:
        self.priority = priority
        self.owner = owner
        # type -> an ordered map job -> ticket: O(1) append, removal and pop-first (an OrderedDict, as a
        # plain dict's first key is found by skipping every key popped before it)
        self.by_type: dict[str, OrderedDict[str, int]] = {}
        self.pushed = 0
        self.count = 0
        self.holes: list[int] = []  # tickets removed from the middle, behind the head still

    def push(self, job_id: str, job_type: str) -> None:
        self.pushed += 1
        self.count += 1
        self.by_type.setdefault(job_type, OrderedDict())[job_id] = self.pushed

    def remove(self, job_id: str, job_type: str) -> None:
        jobs = self.by_type[job_type]
        ticket = jobs.pop(job_id)
        self.count -= 1
        if not jobs:
            del self.by_type[job_type]
        head = self.head()
        if head is None:
            self.holes.clear()
            return
        if ticket > head:
            insort(self.holes, ticket)
        del self.holes[:bisect_left(self.holes, head)]

    def type_of(self, job_id: str) -> str:
        return next(job_type for job_type, jobs in self.by_type.items() if job_id in jobs)

    def head(self) -> int | None:
        """The ticket of the oldest job."""
        return min((next(iter(jobs.values())) for jobs in self.by_type.values()), default=None)

    def first(self, blocked: Container[str]) -> tuple[str, str] | None:
        """(job, type): the oldest job of a type not blocked."""
        best: tuple[int, str, str] | None = None
        for job_type, jobs in self.by_type.items():
            if job_type not in blocked:
                job_id, ticket = next(iter(jobs.items()))
                if best is None or ticket < best[0]:
                    best = (ticket, job_id, job_type)
        return (best[1], best[2]) if best else None

    def rank(self, job_id: str) -> int:
        """1-based, among this user's jobs in the level."""
        ticket = self.by_type[self.type_of(job_id)][job_id]
        head = self.head()
        assert head is not None
        return ticket - head + 1 - (bisect_left(self.holes, ticket) - bisect_left(self.holes, head))


class _Level:
    __slots__ = ("priority", "ring", "size")

    def __init__(self, priority: Priority) -> None:
        self.priority = priority
        self.ring: OrderedDict[str, _UserJobs] = OrderedDict()  # front: the user whose turn is next
        self.size = 0

    def push(self, job_id: str, owner: str, job_type: str) -> _UserJobs:
        user = self.ring.get(owner)
        if user is None:
            user = self.ring[owner] = _UserJobs(self.priority, owner)  # a user joining goes to the back
        user.push(job_id, job_type)
        self.size += 1
        return user

    def pop(self, blocked: Container[str]) -> tuple[str, str] | None:
        for owner, user in self.ring.items():
            found = user.first(blocked)
            if found is not None:
                self.remove(*found, user)
                if owner in self.ring:
                    self.ring.move_to_end(owner)  # had its turn
                return found
        return None

    def remove(self, job_id: str, job_type: str, user: _UserJobs) -> None:
        user.remove(job_id, job_type)
        self.size -= 1
        if not user.by_type:
            del self.ring[user.owner]

    def rank(self, owner: str, turn: int) -> int:
        """1-based, within the level, of the owner's job of rank ``turn``: the turns of the users ahead and
        behind, then this one."""
        ahead, behind = turn - 1, False  # this user's own jobs before it, then the others'
        for other, user in self.ring.items():
            if other == owner:
                behind = True
            else:
                ahead += min(user.count, turn - 1 if behind else turn)
        return ahead + 1


class JobQueue:
    def __init__(self) -> None:
        self._levels: dict[Priority, _Level] = {p: _Level(p) for p in _LEVELS}
        # job -> its user's jobs in its level (its type is found there: a pair each would cost 56 bytes a job)
        self._where: dict[str, _UserJobs] = {}
        self._by_type: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def waiting(self, job_type: str) -> int:
        """How many jobs of this type are queued."""
        return self._by_type[job_type]

    def push(self, job_id: str, priority: Priority, owner: str = "", job_type: str = "") -> int:
        """Queue a job behind its owner's others in its level; return its 1-based position."""
        if job_id in self._where:
            raise ValueError(f"{job_id} is queued already")
        level = self._levels[priority]
        user = level.push(job_id, owner, job_type)
        self._where[job_id] = user
        self._by_type[job_type] += 1
        # the newest of its user's jobs: of rank count; a user's first one joined the back of the ring
        in_level = len(level.ring) if user.count == 1 else level.rank(owner, user.count)
        return self._ahead_of(priority) + in_level

    def pop(self, blocked: Container[str] = ()) -> str | None:
        """The next job whose type is not in ``blocked``."""
        for priority in _LEVELS:
            level = self._levels[priority]
            if level.size:
                found = level.pop(blocked)
                if found is not None:
                    self._forget(*found)
                    return found[0]
        return None

    def remove(self, job_id: str) -> bool:
        user = self._where.get(job_id)
        if user is None:
            return False
        job_type = user.type_of(job_id)
        self._levels[user.priority].remove(job_id, job_type, user)
        self._forget(job_id, job_type)
        return True

    def position(self, job_id: str) -> int:
        """1-based, across the levels; KeyError for a job not queued."""
        user = self._where[job_id]
        turn = user.rank(job_id)
        return self._ahead_of(user.priority) + self._levels[user.priority].rank(user.owner, turn)

    def _ahead_of(self, priority: Priority) -> int:
        return sum(self._levels[p].size for p in _LEVELS if p.rank < priority.rank)

    def _forget(self, job_id: str, job_type: str) -> None:
        del self._where[job_id]
        self._by_type[job_type] -= 1
        if not self._by_type[job_type]:
            del self._by_type[job_type]
