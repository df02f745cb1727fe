"""GET /metrics: the Prometheus text format, read back by a real parser, with figures that move."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from primary.metrics import Exposition, Histogram
from tests.harness import Cluster, EventClient, wait_until

FAMILIES = {
    "vc_up": "gauge", "vc_jobs": "counter", "vc_queue_jobs": "gauge", "vc_job_wait_seconds": "histogram",
    "vc_job_run_seconds": "histogram", "vc_events_published": "counter", "vc_events_delivered": "counter",
    "vc_websocket_clients": "gauge", "vc_http_requests": "counter", "vc_process_cpu_percent": "gauge",
    "vc_process_resident_bytes": "gauge", "vc_child_restarts": "counter",
    "vc_primary_loop_lag_seconds": "histogram", "vc_primary_loop_lag_max_seconds": "gauge",
    "vc_primary_loop_lag_p99_seconds": "gauge",
    "vc_webhook_deliveries": "counter", "vc_web_asyncio_tasks": "gauge",
}  # as the parser names them: a counter's family drops "_total"
RESIZE_ACCEPTED = ("vc_http_requests_total", {"method": "PUT", "route": "/api/video/resize", "status": "202"})
RESIZE_COMPLETED = ("vc_jobs_total", {"type": "resize", "state": "completed"})
# refused by the front door before the router: counted by the route it asked for
JOB_UNAUTHORIZED = ("vc_http_requests_total", {"method": "GET", "route": "/api/jobs/{job_id}", "status": "401"})
# no API route takes PATCH there: the pages' mount answers 405, counted as that route
PATCH_REFUSED = ("vc_http_requests_total", {"method": "PATCH", "route": "static", "status": "405"})


class Scrape:
    """One GET /metrics with the operator's ``--metrics-token`` (a scraper has no login), parsed by prometheus_client."""

    def __init__(self, cluster: Cluster) -> None:
        response = httpx.get(cluster.url + "/metrics", timeout=10, headers=cluster.operator_headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        self.text = response.text
        self.families = {family.name: family for family in text_string_to_metric_families(self.text)}
        self._values = {(s.name, frozenset(s.labels.items())): s.value
                        for family in self.families.values() for s in family.samples}

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self._values.get((name, frozenset((labels or {}).items())))

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for family in self.families.values() for s in family.samples if s.name == name]


def check_with_promtool(text: str) -> None:
    """Prometheus's own linter, when it is installed (it is not by default)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    checked = subprocess.run([promtool, "check", "metrics"], input=text, text=True, capture_output=True,
                             timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def heartbeats_in(scrape: Scrape) -> bool:
    """The WebSocket client's worker has reported it and the job's events (queued, started, completed)."""
    return scrape.value("vc_websocket_clients") == 1 and (scrape.value("vc_events_delivered_total") or 0) >= 3


def completed_resize(cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> str:
    ws = ws_factory(cluster)
    video_id = cluster.upload(clip)
    response = cluster.resize(video_id, 160, 120)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    ws.wait_event("job:completed", job_id)
    return job_id


def test_label_values_and_help_are_escaped() -> None:
    tricky = 'a "quoted" back\\slash\nnew line'
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        histogram.observe(value)
    out = Exposition()
    out.family("t_total", "counter", "help with \\ and\nnewline", [({"route": tricky}, 3)])
    out.histogram("t_seconds", "a histogram", histogram)
    families = {f.name: f for f in text_string_to_metric_families(out.text())}
    assert families["t"].samples[0].labels == {"route": tricky}
    assert families["t"].documentation == "help with \\ and\nnewline"
    buckets = {s.labels["le"]: s.value for s in families["t_seconds"].samples if s.name == "t_seconds_bucket"}
    assert buckets == {"0.1": 1, "1": 2, "+Inf": 3}
    check_with_promtool(out.text())


def test_metrics_parse_and_move_with_a_completed_job(cluster_factory: Callable[..., Cluster], clip: Path,
                                                     ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=2, executors=1)
    completed_resize(cluster, clip, ws_factory)
    assert httpx.get(cluster.url + "/api/jobs/nope", timeout=10).status_code == 401
    with cluster.client() as client:
        assert client.patch("/api/jobs/nope").status_code == 405
    # each web worker's figures come with its next heartbeat: the request's worker may not be the WebSocket's
    scrape = wait_until(lambda: (s := Scrape(cluster)).value(*RESIZE_ACCEPTED) == 1 and heartbeats_in(s)
                        and s.value(*JOB_UNAUTHORIZED) == 1 and s.value(*PATCH_REFUSED) == 1 and s,
                        10, "the workers' figures in /metrics")
    assert {name: family.type for name, family in scrape.families.items()} == FAMILIES
    assert all(family.documentation for family in scrape.families.values()), "every family has its # HELP"
    assert scrape.value("vc_up") == 1
    assert scrape.value(*RESIZE_COMPLETED) == 1
    assert scrape.value("vc_jobs_total", {"type": "convert", "state": "dead"}) == 0
    assert scrape.value("vc_job_wait_seconds_count") == 1 and scrape.value("vc_job_run_seconds_count") == 1
    assert scrape.value("vc_job_run_seconds_bucket", {"le": "+Inf"}) == 1
    assert scrape.value("vc_queue_jobs", {"state": "queued"}) == 0
    assert scrape.value("vc_events_published_total") >= 3  # queued, started, completed (and progress)
    assert scrape.value("vc_child_restarts_total", {"role": "web"}) == 0
    assert {labels["role"] for labels in scrape.labels("vc_process_resident_bytes")} >= {"primary", "web", "executor"}
    assert len(scrape.labels("vc_process_cpu_percent")) >= 4
    check_with_promtool(scrape.text)


def test_job_counts_start_from_the_store_and_never_drop(cluster_factory: Callable[..., Cluster], clip: Path,
                                                        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    completed_resize(cluster, clip, ws_factory)
    cluster.stop()
    cluster.start()
    assert Scrape(cluster).value(*RESIZE_COMPLETED) == 1, "counted from the store at start"
    with cluster.client() as client:
        assert client.post("/api/queue/clean", json={"olderThan": 0}).json()["removed"] == 1
    scrape = Scrape(cluster)
    assert scrape.value(*RESIZE_COMPLETED) == 1, "cleaning the store does not lower a counter"
    assert scrape.value("vc_job_run_seconds_count") == 0, "histograms are this primary's own"

