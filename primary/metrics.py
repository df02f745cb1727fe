"""The cluster's figures in the Prometheus text format (0.0.4), rendered by the primary for ``GET /metrics``.

Jobs: ``vc_jobs_total`` counts the jobs that reached a final state, starting from those in the store
when the primary started, so it only grows while a primary lives (cleaning old jobs does not lower it).
Wait and run times are histograms fed by the engine as jobs start and complete.

HTTP requests, WebSocket clients and delivered events are the sums of the live web workers' figures
from their last heartbeat: the counts of a worker that was replaced (recycled, crashed, reloaded) are
lost with it, which a counter's consumer sees as a reset.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from cluster import kinds
from cluster.protocol import EventName, JobState
from primary.control import Handler
from primary.engine import JobEngine
from primary.jobs import Job
from primary.process_monitor import ProcessMonitor

CONTENT_TYPE = "text/plain; version=0.0.4"
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FINAL_STATES = (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)
QUEUE_STATES = (JobState.QUEUED, JobState.DELAYED, JobState.RUNNING)
FINAL_EVENTS = {EventName.COMPLETED: JobState.COMPLETED, EventName.PERMANENT_FAILURE: JobState.DEAD,
                EventName.CANCELLED: JobState.CANCELLED}

LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_PROBE_INTERVAL_S = 0.05
LAG_RECENT_SAMPLES = 1200  # a minute of probes

Labels = dict[str, str]
Sample = tuple[Labels, float]


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return


class JobMetrics:
    """What the engine reports of each job: final states by type, waits in the queue, run times."""

    def __init__(self, stored: Iterable[tuple[str, str, int]]) -> None:
        finals = {state.value for state in FINAL_STATES}
        self.finished: Counter[tuple[str, str]] = Counter()
        for state, job_type, count in stored:  # rows of (state, type, count), as the store counts them
            if state in finals:
                self.finished[(job_type, state)] += count
        self.wait_s = Histogram()
        self.run_s = Histogram()

    def observe(self, job: Job, name: EventName) -> None:
        """The engine's hook, called after each transition it commits."""
        if name is EventName.STARTED and job.started_at is not None and job.queued_at is not None:
            self.wait_s.observe(max(0.0, job.started_at - job.queued_at) / 1000)
        elif name is EventName.COMPLETED and job.completed_at is not None and job.started_at is not None:
            self.run_s.observe(max(0.0, job.completed_at - job.started_at) / 1000)
        if name in FINAL_EVENTS:
            self.finished[(job.type, FINAL_EVENTS[name].value)] += 1


class LoopLag:
    """How late the primary's loop wakes a task that sleeps LAG_PROBE_INTERVAL_S: the time a callback
    (a request, a periodic task) held the loop, give or take the timer's own slack."""

    def __init__(self) -> None:
        self.histogram = Histogram(LAG_BUCKETS_S)
        self.recent: deque[float] = deque(maxlen=LAG_RECENT_SAMPLES)

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            self.observe(max(0.0, time.monotonic() - asked - LAG_PROBE_INTERVAL_S))

    def observe(self, lag_s: float) -> None:
        self.histogram.observe(lag_s)
        self.recent.append(lag_s)

    def recent_max(self) -> float:
        return max(self.recent, default=0.0)

    def recent_p99(self) -> float:
        if not self.recent:
            return 0.0
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class Exposition:
    """Builds the text: every family with its ``# HELP`` and ``# TYPE``, label values escaped."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._header(name, kind, help_text)
        self._lines.extend(_sample(name, labels, value) for labels, value in samples)

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self._header(name, "histogram", help_text)
        cumulative = 0
        for bound, count in zip(histogram.bounds, histogram.counts, strict=True):
            cumulative += count
            self._lines.append(_sample(f"{name}_bucket", {"le": _number(bound)}, cumulative))
        self._lines.append(_sample(f"{name}_bucket", {"le": "+Inf"}, histogram.count))
        self._lines.append(_sample(f"{name}_sum", {}, histogram.sum))
        self._lines.append(_sample(f"{name}_count", {}, histogram.count))

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"

    def _header(self, name: str, kind: str, help_text: str) -> None:
        help_escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines += [f"# HELP {name} {help_escaped}", f"# TYPE {name} {kind}"]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    pairs = ",".join(f'{key}="{escape_label_value(str(val))}"' for key, val in labels.items())
    return f"{name}{{{pairs}}} {_number(value)}"


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsOps:
    """The ``metrics`` control operation: no session needed, as for ``health`` (an operator's scrape)."""

    def __init__(self, jobs: JobMetrics, engine: JobEngine, worker_stats: Callable[[], dict[int, dict[str, Any]]],
                 restarts: Callable[[], dict[str, int]], processes: Callable[[], list[dict[str, Any]]],
                 counts: Callable[[], dict[str, int]], loop_lag: LoopLag,
                 sources: Iterable[Callable[[Exposition], None]] = ()) -> None:
        self._jobs = jobs
        self._sources = tuple(sources)  # other parts' families (the webhooks' deliveries), after the rest
        self._engine = engine
        self._counts = counts  # the store's jobs by state (its job_counts, kept by triggers on every write)
        self._loop_lag = loop_lag
        self._worker_stats = worker_stats  # the WorkerRegistry's: pid -> the figures of its last heartbeat
        self._restarts = restarts  # the Supervisor's: role -> children replaced
        self._processes = processes
        self._monitor = ProcessMonitor()  # its own: CPU percent since this endpoint's previous scrape

    def handlers(self) -> dict[str, Handler]:
        return {"metrics": lambda _args: self.render()}

    def render(self) -> str:
        out = Exposition()
        out.family("vc_up", "gauge", "1 while the primary answers", [({}, 1)])
        self._render_jobs(out)
        self._render_workers(out)
        self._render_processes(out)
        self._render_loop(out)
        for source in self._sources:
            source(out)
        return out.text()

    def _render_loop(self, out: Exposition) -> None:
        lag = self._loop_lag
        out.histogram("vc_primary_loop_lag_seconds", "how late the primary's event loop ran a 50 ms timer",
                      lag.histogram)
        out.family("vc_primary_loop_lag_max_seconds", "gauge", "the largest loop lag of the last minute",
                   [({}, lag.recent_max())])
        out.family("vc_primary_loop_lag_p99_seconds", "gauge", "the 99th percentile loop lag of the last minute",
                   [({}, lag.recent_p99())])

    def _render_jobs(self, out: Exposition) -> None:
        finished = {(t, s.value): 0 for t in kinds.KINDS for s in FINAL_STATES}  # every series, from 0
        finished.update(self._jobs.finished)
        out.family("vc_jobs_total", "counter", "jobs that reached a final state (completed, dead, cancelled)",
                   [({"type": t, "state": s}, n) for (t, s), n in sorted(finished.items())])
        active = Counter(self._counts())
        out.family("vc_queue_jobs", "gauge", "jobs queued, delayed (waiting for a retry) or running",
                   [({"state": state.value}, active[state.value]) for state in QUEUE_STATES])
        out.histogram("vc_job_wait_seconds", "time from queued to started, per attempt", self._jobs.wait_s)
        out.histogram("vc_job_run_seconds", "time from started to completed, of completed attempts",
                      self._jobs.run_s)
        out.family("vc_events_published_total", "counter", "events published by the primary since it started",
                   [({}, self._engine.bus.published)])

    def _render_workers(self, out: Exposition) -> None:
        by_pid = self._worker_stats()  # one snapshot for every family below
        stats = list(by_pid.values())
        requests: Counter[tuple[str, str, str]] = Counter()
        for figures in stats:
            for method, route, status, count in figures.get("requestsByRoute") or ():
                requests[(str(method), str(route), str(status))] += int(count)
        out.family("vc_events_delivered_total", "counter",
                   "events queued to WebSocket clients, summed over the live web workers",
                   [({}, sum(int(s.get("eventsDelivered") or 0) for s in stats))])
        out.family("vc_websocket_clients", "gauge", "open WebSocket connections, summed over the web workers",
                   [({}, sum(int(s.get("wsClients") or 0) for s in stats))])
        out.family("vc_web_asyncio_tasks", "gauge", "asyncio tasks of each web worker, at its last heartbeat",
                   [({"pid": str(pid)}, int(s.get("tasks") or 0)) for pid, s in by_pid.items()])
        out.family("vc_http_requests_total", "counter",
                   "HTTP responses by route template and status, summed over the live web workers "
                   "(a replaced worker's counts are lost)",
                   [({"method": m, "route": r, "status": s}, n) for (m, r, s), n in sorted(requests.items())])

    def _render_processes(self, out: Exposition) -> None:
        described = self._monitor.describe(self._processes())
        cpu = [(_process_labels(p), p["cpuPercent"]) for p in described if p.get("cpuPercent") is not None]
        rss = [(_process_labels(p), p["rssBytes"]) for p in described if p.get("rssBytes") is not None]
        out.family("vc_process_cpu_percent", "gauge",
                   "CPU use of each process since the previous scrape (100 = one core; ffmpeg included)", cpu)
        out.family("vc_process_resident_bytes", "gauge", "resident memory of each process (ffmpeg included)", rss)
        roles = {"web": 0, "executor": 0, **self._restarts()}
        out.family("vc_child_restarts_total", "counter", "children replaced after they died, by role",
                   [({"role": role}, n) for role, n in sorted(roles.items())])


def _process_labels(process: dict[str, Any]) -> Labels:
    labels = {"role": str(process["role"]), "pid": str(process["pid"])}
    if process.get("remote"):
        labels.update(host=str(process.get("hostname", "")), address=str(process.get("address", "")))
    return labels
