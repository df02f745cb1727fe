"""The store as it grows: the same figures with 1k, 100k and 1M jobs in it, beside GET /api/health.

For each size a fresh data dir is filled directly through JobStore (one transaction, prebuilt rows):
that many queued jobs of one video, an event for each, the queue paused. A cluster (2 web workers, no
executor) starts on it, and wrk measures job submissions (PUT /api/video/resize, every one a new job;
best of three runs), then p50/p99 of GET /api/jobs?limit=20, GET /api/queue/stats and GET /api/jobs/{id};
a WebSocket client resumes the last 1,000 events; /metrics gives the primary's loop lag (p99 and max of
the last minute) and its RSS with every queued job in memory (with the store's jobs alone, before any
submission, and again at the end). Then the queued jobs are marked completed and the
cluster starts again with one idle executor, to time a request to its job:started.

Targets: >= 3,000 submissions/s at every size; every figure at the largest size within 1.3x of the
smallest; loop lag p99 < 20 ms; primary RSS < 1 GiB with 1M queued jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
import httpx
from harness import PYTHON, add_administrator, exit_on_sigterm, free_port, login, running_server, write_summary
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cluster.protocol import Event, JobState
from primary.jobs import Job
from primary.store import JobStore

VIDEO_ID = "benchvideo"
VIDEO_INFO = {"format": "mp4", "width": 1920, "height": 1080, "duration": 10.0, "sizeBytes": 1000,
              "videoCodec": "h264", "audioCodec": "aac"}
WORKERS = 2
SUBMIT_CONNECTIONS = 32
SUBMIT_RUNS = 3  # the best counts: one run's figure moved by 20% between runs of one store
LATENCY_CONNECTIONS = 4
RESUMES = 20
START_PROBES = 50  # a p50 of ten probes moved by 30% between runs of one store
TARGET_SUBMITS = 3000
TARGET_GROWTH = 1.3
TARGET_LAG_S = 0.020
TARGET_RSS = 1 << 30
PRIMARY_RSS = 'vc_process_resident_bytes{role="primary"'
LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
SUBMIT_LUA = """
local n = 0
id = 0  -- a global: setup sets each thread's own (a local here would stay 0 in every thread)
setup = function(thread) thread:set("id", id); id = id + 1 end
request = function()
  n = n + 1
  local k = RUN * 2000006 + id * 1000003 + n  -- every run and thread its own sizes: no request is a duplicate
  local w = 2 * (k % 3832) + 16
  local h = 2 * (math.floor(k / 3832) % 2152) + 16
  return wrk.format("PUT", "/api/video/resize", nil,
    string.format('{"videoId": "%s", "width": %d, "height": %d}', VIDEO, w, h))
end
"""


@dataclass
class Figures:
    size: int
    fill_s: float = 0.0
    start_s: float = 0.0
    health_rps: float = 0.0
    submits_rps: float = 0.0
    submit_errors: int = 0
    latencies_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (p50, p99)
    resume_ms: tuple[float, float] = (0.0, 0.0)
    start_ms: tuple[float, float] = (0.0, 0.0)
    lag_p99_s: float = 0.0
    lag_max_s: float = 0.0
    rss_bytes: int = 0  # with exactly `size` jobs queued, before any submission
    rss_after_bytes: int = 0  # after every measure, with the submitted jobs queued too
    queued_after: int = 0
    submitted: float = 0.0  # requests wrk counted in the submission runs
    new_jobs: int = 0  # jobs those runs queued (a duplicate request queues none)


# the fill


def fill(db_path: Path, size: int) -> float:
    began = time.monotonic()
    store = JobStore(db_path)
    # a fill, not a primary: no sync, and a cache that holds the indexes (SQLite's 2 MB default spills them)
    store._db.execute("PRAGMA synchronous=OFF")
    store._db.execute("PRAGMA cache_size=-500000")
    try:
        store.add_video(VIDEO_ID, "", "bench.mp4", VIDEO_INFO, time.time() * 1000 - 1000)
        base_ms = int(time.time() * 1000) - size - 10_000
        jobs = (Job(id=f"resize-{VIDEO_ID}-{base_ms + n}", type="resize", video_id=VIDEO_ID,
                    params={"width": 2 * (n % 3840) + 2, "height": 2 * (n // 3840) + 2 + 4400},
                    created_at=float(base_ms + n), queued_at=float(base_ms + n), queue_order=n + 1)
                for n in range(size))
        events = (Event("job:queued", n + 1, float(base_ms + n),
                        {"jobId": f"resize-{VIDEO_ID}-{base_ms + n}", "type": "resize", "videoId": VIDEO_ID,
                         "userId": "", "queuePosition": n + 1}) for n in range(size))
        store.save_rows(jobs, events)
        store.set_setting("queue_paused", "1")
    finally:
        store.close()
    return time.monotonic() - began


def complete_all(db_path: Path) -> None:
    """Turn the queued fill into history, so the next start has an empty queue and an idle executor."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE jobs SET state = ?, completed_at = created_at + 1, progress = 100 WHERE state = ?",
                   (JobState.COMPLETED.value, JobState.QUEUED.value))
        db.execute("UPDATE settings SET value = '0' WHERE name = 'queue_paused'")
        db.execute("COMMIT")
    finally:
        db.close()


# the cluster


@contextlib.contextmanager
def cluster(data_dir: Path, password: str, size: int, executors: int, log: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    args = [PYTHON, "run_cluster.py", "--port", str(port), "--data-dir", str(data_dir), "--workers", str(WORKERS),
            "--executors", str(executors), "--log-level", "warning", "--job-rate-per-min", "0",
            "--max-queued-jobs-per-user", "0", "--event-retention", str(size * 3 + 100_000),
            "--worker-boot-timeout-s", "300"]
    with running_server(args, f"http://127.0.0.1:{port}", log) as server:
        yield server.url, login(server.url, password)


def wait_for_executor(url: str, token: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = httpx.get(url + "/api/health", headers=_auth(token), timeout=5, trust_env=False).json()
        if any(p["role"] == "executor" and p.get("joined") for p in health["processes"]):
            return
        time.sleep(0.1)
    raise TimeoutError("the executor never joined")


# wrk


def wrk(url: str, connections: int, duration_s: float, script: Path | None = None) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors)."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency", url]
    if script is not None:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p50, p99 = (_wrk_percentile(out, p) for p in ("50", "99"))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, p50, p99, errors + (int(bad.group(1)) if bad else 0)


def _wrk_percentile(out: str, percent: str) -> float:
    match = re.search(rf"^\s+{percent}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percent}% latency in wrk's output:\n{out}")
    return float(match.group(1)) * LATENCY_UNITS_MS[match.group(2)]


def wrk_script(tmp: Path, token: str, name: str, lua: str) -> Path:
    path = tmp / f"{name}.lua"
    headers = (f'wrk.headers["Authorization"] = "Bearer {token}"\n'
               'wrk.headers["Content-Type"] = "application/json"\n')
    path.write_text(headers + lua)
    return path


# the measures


def measure_running(figures: Figures, url: str, token: str, tmp: Path, duration_s: float) -> None:
    auth = wrk_script(tmp, token, "auth", "")
    figures.rss_bytes = int(_metric(_metrics(url, token), PRIMARY_RSS))
    figures.health_rps = wrk(url + "/api/health", SUBMIT_CONNECTIONS, duration_s)[0]
    queued_before, runs = _queued(url, token), []
    for run in range(SUBMIT_RUNS):
        submit = wrk_script(tmp, token, f"submit{run}", f'VIDEO = "{VIDEO_ID}"\nRUN = {run}\n' + SUBMIT_LUA)
        runs.append(wrk(url, SUBMIT_CONNECTIONS, duration_s, submit))
    figures.submits_rps = max(run[0] for run in runs)
    figures.submit_errors = sum(run[3] for run in runs)
    figures.submitted = sum(run[0] for run in runs) * max(1, round(duration_s))  # wrk's count, as it rounds
    figures.new_jobs = _queued(url, token) - queued_before
    a_job = httpx.get(url + "/api/jobs?limit=1", headers=_auth(token), timeout=30, trust_env=False).json()[0]
    for name, path in (("GET /api/jobs?limit=20", "/api/jobs?limit=20"), ("GET /api/queue/stats", "/api/queue/stats"),
                       ("GET /api/jobs/{id}", f"/api/jobs/{a_job['jobId']}")):
        _, p50, p99, errors = wrk(url + path, LATENCY_CONNECTIONS, duration_s / 2, auth)
        if errors:
            raise RuntimeError(f"{name}: {errors} errors")
        figures.latencies_ms[name] = (p50, p99)
    figures.resume_ms = _percentiles([resume_last_1000(url, token) for _ in range(RESUMES)])
    metrics = _metrics(url, token)
    figures.lag_p99_s = _metric(metrics, "vc_primary_loop_lag_p99_seconds")
    figures.lag_max_s = _metric(metrics, "vc_primary_loop_lag_max_seconds")
    figures.rss_after_bytes = int(_metric(metrics, PRIMARY_RSS))
    figures.queued_after = _queued(url, token)


def _queued(url: str, token: str) -> int:
    stats = httpx.get(url + "/api/queue/stats", headers=_auth(token), timeout=30, trust_env=False).json()
    return int(stats["byState"]["queued"])


def _metrics(url: str, token: str) -> str:
    return httpx.get(url + "/metrics", headers=_auth(token), timeout=30, trust_env=False).text


def resume_last_1000(url: str, token: str) -> float:
    ws_url = url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=_auth(token), open_timeout=10, max_size=None) as ws:
        welcome = json.loads(ws.recv(10))
        began = time.perf_counter()
        ws.send(json.dumps({"type": "resume", "since": max(0, welcome["lastSeq"] - 1000)}))
        while True:
            message = json.loads(ws.recv(30))
            if message.get("type") == "resumed":
                assert message["replayed"] >= 1000, message
                return (time.perf_counter() - began) * 1000


def measure_start(figures: Figures, url: str, token: str) -> None:
    wait_for_executor(url, token)
    ws_url = url.replace("http://", "ws://") + "/ws"
    times = []
    with connect(ws_url, additional_headers=_auth(token), open_timeout=10) as ws, \
            httpx.Client(base_url=url, headers=_auth(token), timeout=30, trust_env=False) as client:
        # as a page does: resume from the welcome's seq, so no event waits for a resume that never comes
        ws.send(json.dumps({"type": "resume", "since": json.loads(ws.recv(10))["lastSeq"]}))
        while json.loads(ws.recv(10)).get("type") != "resumed":
            pass
        for n in range(START_PROBES):
            began = time.perf_counter()
            response = client.put("/api/video/resize", json={"videoId": VIDEO_ID, "width": 2 * n + 16, "height": 16})
            job_id = response.json()["jobId"]
            while True:
                event = json.loads(ws.recv(30))
                if event.get("data", {}).get("jobId") != job_id:
                    continue
                if event["event"] == "job:started":
                    times.append((time.perf_counter() - began) * 1000)
                if event["event"] in ("job:completed", "job:permanent-failure", "job:failed"):
                    break  # the video has no file: it fails at once, and the executor is idle again
            client.delete(f"/api/jobs/{job_id}")  # a failed one waiting for its retry leaves the queue
    figures.start_ms = _percentiles(times)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _metric(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError(f"{prefix} is not in /metrics")


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run_size(size: int, duration_s: float, tmp_dir: Path | None) -> Figures:
    figures = Figures(size)
    with tempfile.TemporaryDirectory(prefix=f"vc-bench-store-{size}-", dir=tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        data_dir, password = tmp / "data", secrets.token_urlsafe(16)
        add_administrator(data_dir, password)
        figures.fill_s = fill(data_dir / "cluster.db", size)
        print(f"  {size:>9} jobs: filled in {figures.fill_s:.1f} s", flush=True)
        began = time.monotonic()
        with cluster(data_dir, password, size, 0, tmp / "queued.log") as (url, token):
            figures.start_s = time.monotonic() - began
            measure_running(figures, url, token, tmp, duration_s)
        complete_all(data_dir / "cluster.db")
        with cluster(data_dir, password, size, 1, tmp / "idle.log") as (url, token):
            measure_start(figures, url, token)
    print_size(figures)
    return figures


def print_size(f: Figures) -> None:
    print(f"  {f.size:>9} jobs: started in {f.start_s:.1f} s; health {f.health_rps:.0f} req/s; "
          f"submissions {f.submits_rps:.0f}/s (errors {f.submit_errors})", flush=True)
    for name, (p50, p99) in f.latencies_ms.items():
        print(f"      {name:24} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    print(f"      {'resume of 1,000 events':24} p50 {f.resume_ms[0]:7.2f} ms  p99 {f.resume_ms[1]:7.2f} ms")
    print(f"      {'request to job:started':24} p50 {f.start_ms[0]:7.2f} ms  p99 {f.start_ms[1]:7.2f} ms")
    print(f"      loop lag p99 {f.lag_p99_s * 1000:.1f} ms, max {f.lag_max_s * 1000:.1f} ms; "
          f"primary RSS {f.rss_bytes / 2**20:.0f} MiB with {f.size} queued, {f.rss_after_bytes / 2**20:.0f} MiB "
          f"after the measures with {f.queued_after} queued", flush=True)


def verdicts(all_figures: list[Figures]) -> tuple[bool, list[str]]:
    first, last = all_figures[0], all_figures[-1]
    lines, passed = [], True

    def check(ok: bool, text: str) -> None:
        nonlocal passed
        passed = passed and ok
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    for f in all_figures:
        check(f.submits_rps >= TARGET_SUBMITS and f.submit_errors == 0,
              f"{f.size} jobs: {f.submits_rps:.0f} submissions/s (target >= {TARGET_SUBMITS})")
        # requests still in flight when wrk stops are queued but not counted: a few per connection
        check(f.new_jobs >= f.submitted * 0.99, f"{f.size} jobs: every submission a new job ({f.new_jobs} new jobs "
                                                 f"for {f.submitted:.0f} requests)")
        check(f.lag_p99_s < TARGET_LAG_S, f"{f.size} jobs: loop lag p99 {f.lag_p99_s * 1000:.1f} ms (target < 20)")
    if last.size >= 1_000_000:
        check(last.rss_bytes < TARGET_RSS, f"{last.size} queued jobs: primary RSS {last.rss_bytes / 2**20:.0f} MiB "
                                           "(target < 1024)")
    if last is not first:
        pairs = [("submissions/s", 1 / max(first.submits_rps, 1), 1 / max(last.submits_rps, 1))]
        pairs += [(name, first.latencies_ms[name][0], last.latencies_ms[name][0]) for name in first.latencies_ms]
        pairs += [("resume p50", first.resume_ms[0], last.resume_ms[0]),
                  ("to job:started p50", first.start_ms[0], last.start_ms[0])]
        for name, small, large in pairs:
            growth = large / small if small else float("inf")
            check(growth <= TARGET_GROWTH, f"{name}: {last.size} jobs / {first.size} jobs = {growth:.2f}x "
                                           f"(target <= {TARGET_GROWTH})")
    return passed, lines


def main() -> int:
    exit_on_sigterm()
    harness.START_TIMEOUT_S = 900.0  # a primary recovering a million queued jobs takes a while to serve
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000", help="store sizes, comma-separated")
    parser.add_argument("--duration-s", type=float, default=8.0, help="each wrk run")
    parser.add_argument("--tmp-dir", type=Path, help="where the data dirs go (e.g. /dev/shm, off a busy disk)")
    parser.add_argument("--summary-json", type=Path, help="write the verdict here (for run_all.py)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"store bench: sizes {sizes}, {WORKERS} web workers, wrk -c{SUBMIT_CONNECTIONS} for submissions", flush=True)
    all_figures = [run_size(size, args.duration_s, args.tmp_dir) for size in sizes]
    passed, lines = verdicts(all_figures)
    print("\n" + "\n".join(lines))
    print(f"\nresult: {'PASS' if passed else 'FAIL'}")
    write_summary(args.summary_json, "store", passed, f"store: {lines[0] if lines else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
