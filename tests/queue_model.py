"""A naive model of the fair queue for the tests: lists, and positions by simulating the pops on a copy."""

from __future__ import annotations

import copy

from cluster.protocol import Priority

LEVELS = sorted(Priority, key=lambda p: p.rank)


class QueueModel:
    def __init__(self) -> None:
        # per level: a list of [owner, [(job, type)...]], front first
        self.levels: dict[Priority, list[list]] = {p: [] for p in LEVELS}

    def jobs(self) -> list[str]:
        return [job for level in self.levels.values() for _, queued in level for job, _ in queued]

    def push(self, job_id: str, priority: Priority, owner: str, job_type: str = "") -> None:
        ring = self.levels[priority]
        for entry in ring:
            if entry[0] == owner:
                entry[1].append((job_id, job_type))
                return
        ring.append([owner, [(job_id, job_type)]])

    def pop(self, blocked: frozenset[str] = frozenset()) -> str | None:
        for priority in LEVELS:
            ring = self.levels[priority]
            for index, (owner, queued) in enumerate(ring):
                found = next((item for item in queued if item[1] not in blocked), None)
                if found is None:
                    continue
                queued.remove(found)
                del ring[index]
                if queued:
                    ring.append([owner, queued])
                return found[0]
        return None

    def remove(self, job_id: str) -> None:
        for ring in self.levels.values():
            for index, (_owner, queued) in enumerate(ring):
                for item in queued:
                    if item[0] == job_id:
                        queued.remove(item)
                        if not queued:
                            del ring[index]
                        return
        raise KeyError(job_id)

    def order(self) -> list[str]:
        """Every queued job, in the order the pops would take them."""
        twin = copy.deepcopy(self)
        popped = []
        while (job_id := twin.pop()) is not None:
            popped.append(job_id)
        return popped
