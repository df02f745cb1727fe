"""Which job types may start now: a type paused by an administrator, or running at its concurrency limit
(``--job-policies hls:concurrency=1``), is held back while the other types keep running.

The paused types are a store setting, so they stay paused across a restart of the primary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from primary.retry import split_policies

PAUSED_TYPES_SETTING = "queue_paused_types"


def parse_concurrency(text: str, known_types: Iterable[str]) -> dict[str, int]:
    """The concurrency limit of each type that has one, from ``--job-policies``; ValueError, naming the
    mistake, for an unknown type or a limit that is not a whole number of at least 1."""
    known = tuple(known_types)
    limits = {}
    for job_type, settings in split_policies(text).items():
        if job_type not in known:
            raise ValueError(f"--job-policies: unknown job type {job_type!r} (known: {', '.join(known)})")
        if "concurrency" in settings:
            value = settings["concurrency"]
            if not (value.isascii() and value.isdigit() and int(value) >= 1):
                raise ValueError(f"--job-policies: {job_type}:concurrency must be a whole number of at least 1, "
                                 f"not {value!r}")
            limits[job_type] = int(value)
    return limits


class TypeGates:
    def __init__(self, paused_setting: str = "", limits: dict[str, int] | None = None) -> None:
        self.paused: set[str] = _paused_from(paused_setting)
        self.limits: dict[str, int] = dict(limits or {})

    def blocked(self, running: Counter[str]) -> set[str]:
        """The types no job may start of now, given the jobs running of each type."""
        full = {job_type for job_type, limit in self.limits.items() if running[job_type] >= limit}
        return self.paused | full if self.paused else full

    def setting(self) -> str:
        return json.dumps(sorted(self.paused))


def _paused_from(setting: str) -> set[str]:
    try:
        paused = json.loads(setting) if setting else []
    except json.JSONDecodeError:
        return set()
    return {str(t) for t in paused} if isinstance(paused, list) else set()
