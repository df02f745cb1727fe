"""Faults a test injects into an executor's jobs through ``VC_TEST_FAULTS``; none unless it is set.

``VC_TEST_FAULTS=raise@extract-audio,hang@convert``: every extract-audio job raises an exception no
job code expects, every convert job goes silent (the executor heart-beats on but never reports it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

FAULTS_ENV = "VC_TEST_FAULTS"
FAULTS = ("raise", "hang")


class InjectedFault(RuntimeError):
    """Stands for any bug in a job's code: nothing catches it by name."""


def faults_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Job type -> fault, from ``fault@type`` items separated by commas."""
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in environ.get(FAULTS_ENV, "").split(","))):
        fault, _, job_type = item.partition("@")
        if fault not in FAULTS or not job_type:
            raise ValueError(f"{FAULTS_ENV}: {item!r} is not one of {', '.join(FAULTS)} @ a job type")
        faults[job_type] = fault
    return faults


async def inject(faults: Mapping[str, str], job_type: str) -> None:
    fault = faults.get(job_type)
    if fault == "raise":
        raise InjectedFault(f"injected into {job_type}")
    if fault == "hang":
        await asyncio.Event().wait()  # until cancelled
