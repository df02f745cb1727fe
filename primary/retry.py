"""Retry policy: a pure back-off function, per-type policies, and the tracker that decides to give up."""

from __future__ import annotations

from dataclasses import dataclass, replace


def compute_backoff_ms(attempt: int, initial_ms: int, factor: float = 2.0, cap_ms: int | None = None) -> int:
    """Delay before retrying after the failure of 0-based attempt ``attempt``: initial * factor**attempt."""
    delay = int(initial_ms * factor**attempt)
    return min(delay, cap_ms) if cap_ms is not None else delay


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    initial_ms: int = 2000
    factor: float = 2.0
    cap_ms: int | None = None
    timeout_s: float = 3600.0


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_ms: int = 0


_POLICY_KEYS = {"retries": ("max_retries", int), "backoff_ms": ("initial_ms", int), "factor": ("factor", float),
                "cap_ms": ("cap_ms", int), "timeout_s": ("timeout_s", float)}


def split_policies(text: str) -> dict[str, dict[str, str]]:
    """``"resize:retries=5,backoff_ms=1000;hls:timeout_s=7200"`` -> the settings of each job type. A type may
    also follow a comma (``"hls:concurrency=1,resize:concurrency=2"``): a setting with a colon starts one."""
    policies: dict[str, dict[str, str]] = {}
    settings: dict[str, str] | None = None
    for part in filter(None, (p.strip() for p in text.replace(";", ",;,").split(","))):
        if part == ";":
            settings = None
            continue
        if ":" in part.partition("=")[0]:
            job_type, _, part = part.partition(":")
            if not job_type.strip():
                raise ValueError(f"--job-policies: a job type is missing before {':' + part!r}")
            settings = policies.setdefault(job_type.strip(), {})
        if settings is None:
            raise ValueError(f"--job-policies: {part!r} names no job type (write TYPE:{part})")
        if part:
            key, equals, value = part.partition("=")
            if not equals or not value.strip():
                raise ValueError(f"--job-policies: {part!r} is not SETTING=VALUE")
            settings[key.strip()] = value.strip()
    return policies


DISPATCH_KEYS = {"concurrency"}  # read by the type gates, not by the retry policy


def parse_policies(text: str, default: RetryPolicy) -> dict[str, RetryPolicy]:
    """A retry policy per job type, from ``--job-policies``."""
    policies: dict[str, RetryPolicy] = {}
    for job_type, settings in split_policies(text).items():
        changes = {}
        for key, value in settings.items():
            if key in DISPATCH_KEYS:
                continue
            if key not in _POLICY_KEYS:
                known = ", ".join([*_POLICY_KEYS, *DISPATCH_KEYS])
                raise ValueError(f"unknown job policy setting {key!r} (known: {known})")
            name, kind = _POLICY_KEYS[key]
            try:
                changes[name] = kind(value)
            except ValueError:
                raise ValueError(f"--job-policies: {job_type}:{key} must be a number, not {value!r}") from None
        policies[job_type] = replace(default, **changes)
    return policies


class RetryTracker:
    """Owns the policy of each job type and decides, per job, whether a failed attempt is retried."""

    def __init__(self, default: RetryPolicy, per_type: dict[str, RetryPolicy] | None = None) -> None:
        self.default = default
        self.per_type = per_type or {}

    def policy(self, job_type: str) -> RetryPolicy:
        return self.per_type.get(job_type, self.default)

    def on_failure(self, job_type: str, attempts_made: int, max_retries: int, permanent: bool) -> RetryDecision:
        failed_attempt = attempts_made - 1  # 0-based
        if permanent or failed_attempt >= max_retries:
            return RetryDecision(retry=False)
        policy = self.policy(job_type)
        return RetryDecision(retry=True, delay_ms=compute_backoff_ms(failed_attempt, policy.initial_ms,
                                                                      policy.factor, policy.cap_ms))
