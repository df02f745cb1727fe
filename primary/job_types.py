"""The job types the cluster knows, from one place (the queue routes, the policies and the stats ask here)."""

from __future__ import annotations


def known_job_types() -> tuple[str, ...]:
    from primary.job_ops import _JOB_PARAMS  # the kinds a request may create; a registry of kinds can answer here

    return tuple(_JOB_PARAMS)
