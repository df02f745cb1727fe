"""Job dispatch and recovery: request -> job:started with an idle executor, and SIGKILL of the primary ->
serving again with its queue restored. Each beside a baseline measured in the same run.

- dispatch: p50/p99 from sending a resize request to receiving its job:started on a WebSocket, one job at a
  time (each waits for the previous to complete, so the executor is idle); baseline: request -> job:queued on
  the same runs (what accepting a job costs before any dispatch). Target p50 <= 20 ms.
- recovery: SIGKILL the primary with jobs queued, start it again, time until /api/health answers with the same
  queued count; baseline: a cold start of the same cluster. Target <= 3 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import imageio_ffmpeg
import websockets
from harness import (
    PYTHON,
    ROOT,
    add_administrator,
    bench_arguments,
    free_port,
    login,
    stop_process,
    verdict,
    write_summary,
)

JOBS = 40
QUEUED_FOR_RECOVERY = 50
TARGET_P50_MS = 20.0
TARGET_RECOVERY_S = 3.0
DEADLINE_S = 60.0
METRICS_TOKEN = secrets.token_hex(16)


def make_clip(directory: Path) -> Path:
    clip = directory / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", "-preset", "ultrafast",
                    str(clip)], check=True, timeout=60)
    return clip


class ClusterProcess:
    def __init__(self, data_dir: Path, executors: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [PYTHON, "run_cluster.py", "--port", str(self.port), "--data-dir", str(data_dir),
                     "--workers", "2", "--executors", str(executors), "--log-level", "warning",
                     "--metrics-token", METRICS_TOKEN]  # /api/health shows the queue counts with it
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> float:
        """Seconds until /api/health answers."""
        started = time.monotonic()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.health(wait=True)
        return time.monotonic() - started

    def health(self, wait: bool = False) -> dict:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                return httpx.get(self.url + "/api/health", timeout=2,
                                 headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).json()
            except (httpx.HTTPError, ValueError):
                if not wait or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)  # polling a server that is starting: nothing to await

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


async def dispatch_latencies(url: str, token: str, video_id: str) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    queued, started = [], []
    async with websockets.connect(url.replace("http", "ws") + "/ws", additional_headers=headers) as ws, \
            httpx.AsyncClient(base_url=url, headers=headers) as http:
        for i in range(-1, JOBS):  # job -1 warms up (a new connection holds live events briefly for a resume)
            sent = time.monotonic()
            response = await http.put("/api/video/resize", json={"videoId": video_id, "width": 66 + 2 * i,
                                                                  "height": 48})
            job_id = response.json()["jobId"]
            seen: dict[str, float] = {}
            while "job:completed" not in seen:
                message = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
                if message.get("data", {}).get("jobId") == job_id:
                    seen.setdefault(message["event"], time.monotonic())
            if i >= 0:
                queued.append((seen["job:queued"] - sent) * 1000)
                started.append((seen["job:started"] - sent) * 1000)
    return queued, started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure_dispatch(tmp: Path, clip: Path) -> tuple[bool, str]:
    data_dir, password = tmp / "dispatch", "bench-password-1"
    add_administrator(data_dir, password)
    cluster = ClusterProcess(data_dir, executors=1)
    try:
        cluster.start(tmp / "dispatch.log")
        token = login(cluster.url, password)
        with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}) as http:
            video_id = http.post("/api/upload-video", content=clip.read_bytes(),
                                 headers={"filename": "clip.mp4"}).json()["videoId"]
        queued, started = asyncio.run(dispatch_latencies(cluster.url, token, video_id))
    finally:
        cluster.stop()
    p50 = statistics.median(started)
    print(f"request -> job:queued  (baseline) p50 {statistics.median(queued):6.1f} ms  p99 {percentile(queued, 99):6.1f} ms")
    print(f"request -> job:started            p50 {p50:6.1f} ms  p99 {percentile(started, 99):6.1f} ms"
          f"   target p50 <= {TARGET_P50_MS:g} ms: {verdict(p50 <= TARGET_P50_MS)}")
    return p50 <= TARGET_P50_MS, f"job start p50 {p50:.1f} ms (queued p50 {statistics.median(queued):.1f} ms)"


def measure_recovery(tmp: Path, clip: Path) -> tuple[bool, str]:
    data_dir, password = tmp / "recovery", "bench-password-1"
    add_administrator(data_dir, password)
    cluster = ClusterProcess(data_dir, executors=0)
    try:
        cold_s = cluster.start(tmp / "recovery.log")
        token = login(cluster.url, password)
        with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}) as http:
            video_id = http.post("/api/upload-video", content=clip.read_bytes(),
                                 headers={"filename": "clip.mp4"}).json()["videoId"]
            for i in range(QUEUED_FOR_RECOVERY):
                http.put("/api/video/resize", json={"videoId": video_id, "width": 66 + 2 * i, "height": 48})
        queued_before = cluster.health()["queue"]["queued"]
        cluster.kill()
        killed = time.monotonic()
        cluster.start(tmp / "recovery.log")
        recovered_s = time.monotonic() - killed
        restored = cluster.health()["queue"]["queued"] == queued_before
    finally:
        cluster.stop()
    passed = restored and recovered_s <= TARGET_RECOVERY_S
    print(f"cold start (baseline)           {cold_s:5.2f} s")
    print(f"SIGKILL -> serving, queue of {queued_before} restored={restored}  {recovered_s:5.2f} s"
          f"   ratio {recovered_s / cold_s:4.2f}   target <= {TARGET_RECOVERY_S:g} s: {verdict(passed)}")
    return passed, f"recovery {recovered_s:.2f} s (cold start {cold_s:.2f} s)"


def main() -> int:
    args = bench_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clip = make_clip(tmp)
        dispatch_ok, dispatch_line = measure_dispatch(tmp, clip)
        recovery_ok, recovery_line = measure_recovery(tmp, clip)
    write_summary(args.summary_json, "job_bench", dispatch_ok and recovery_ok, f"{dispatch_line}; {recovery_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
