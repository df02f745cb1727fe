"""Queue fairness under load: a heavy user queues 200 jobs, a light user 2 at a time, again and again.

The cluster runs 2 executors. The heavy user queues HEAVY_JOBS resizes at once; then, every ROUND_GAP_S
while the heavy user still has jobs waiting, the light user queues 2 resizes of the same clip and waits
for both to complete. Each light job's wait (queuedAt to startedAt) and run time (startedAt to
completedAt) come from the primary's own job record. The baseline, measured in the same run, is the
light jobs' own run time: the figure is their mean wait over their mean run time.

Also printed, for scale: the wait a first-in-first-out queue would have given the same jobs (the heavy
jobs waiting when each light pair was queued, times the heavy jobs' mean run time, over the executors).

**Target:** the light user's mean wait at most 2x the light jobs' mean run time.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import PYTHON, add_user, bench_arguments, free_port, running_server, verdict, write_summary
from job_bench import make_clip

HEAVY_JOBS = 200
LIGHT_PER_ROUND = 2
EXECUTORS = 2
ROUND_GAP_S = 1.0
MAX_ROUNDS = 20
TARGET_RATIO = 2.0
DEADLINE_S = 600.0




class User:
    def __init__(self, url: str, name: str, password: str) -> None:
        token = httpx.post(url + "/api/login", json={"username": name, "password": password}, timeout=10,
                           trust_env=False).json()["token"]
        self.client = httpx.Client(base_url=url, timeout=30, trust_env=False,
                                   headers={"Authorization": f"Bearer {token}"})
        self.sizes = 0

    def upload(self, clip: Path) -> str:
        response = self.client.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": clip.name})
        response.raise_for_status()
        return response.json()["videoId"]

    def resize(self, video_id: str) -> str:
        self.sizes += 1  # every job a distinct size: none is an identical job returned again
        response = self.client.put("/api/video/resize", json={"videoId": video_id, "width": 96 + 2 * self.sizes,
                                                              "height": 72})
        response.raise_for_status()
        return response.json()["jobId"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/api/jobs/{job_id}").json()

    def until_completed(self, job_ids: list[str]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            jobs = [self.job(job_id) for job_id in job_ids]
            if all(job["state"] == "completed" for job in jobs):
                return jobs
            if any(job["state"] in ("dead", "cancelled") for job in jobs) or time.monotonic() > deadline:
                raise RuntimeError(f"light jobs did not complete: {[job['state'] for job in jobs]}")
            time.sleep(0.05)


def run(tmp: Path) -> tuple[bool, str]:
    clip = make_clip(tmp)
    data_dir, passwords = tmp / "data", {name: secrets.token_urlsafe(12) for name in ("bench", "heavy", "light")}
    add_user(data_dir, "bench", passwords["bench"], admin=True)
    add_user(data_dir, "heavy", passwords["heavy"])
    add_user(data_dir, "light", passwords["light"])
    port = free_port()
    args = [PYTHON, "run_cluster.py", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1",
            "--executors", str(EXECUTORS), "--log-level", "warning", "--job-rate-per-min", "0"]
    with running_server(args, f"http://127.0.0.1:{port}", tmp / "cluster.log") as server:
        heavy, light = (User(server.url, name, passwords[name]) for name in ("heavy", "light"))
        heavy_video, light_video = heavy.upload(clip), light.upload(clip)
        heavy_jobs = [heavy.resize(heavy_video) for _ in range(HEAVY_JOBS)]
        light_jobs: list[dict[str, Any]] = []
        heavy_waiting: list[int] = []
        for _ in range(MAX_ROUNDS):
            waiting = heavy.client.get("/api/queue/stats/resize").json()["waiting"]
            if waiting < HEAVY_JOBS // 10:
                break
            heavy_waiting.append(waiting)
            light_jobs += light.until_completed([light.resize(light_video) for _ in range(LIGHT_PER_ROUND)])
            time.sleep(ROUND_GAP_S)
        heavy_runs = [job["completedAt"] - job["startedAt"] for job in map(heavy.job, heavy_jobs[:50])
                      if job["state"] == "completed"]
    waits = [job["startedAt"] - job["queuedAt"] for job in light_jobs]
    runs = [job["completedAt"] - job["startedAt"] for job in light_jobs]
    mean_wait, mean_run = statistics.mean(waits), statistics.mean(runs)
    fifo_wait = statistics.mean(heavy_waiting) * statistics.mean(heavy_runs) / EXECUTORS
    ratio = mean_wait / mean_run
    passed = ratio <= TARGET_RATIO
    print(f"heavy user: {HEAVY_JOBS} jobs queued at once; light user: {len(light_jobs)} jobs in "
          f"{len(heavy_waiting)} rounds of {LIGHT_PER_ROUND}, on {EXECUTORS} executors")
    print(f"light jobs: wait mean {mean_wait:.0f} ms (max {max(waits):.0f} ms), run mean {mean_run:.0f} ms "
          f"(baseline)")
    print(f"a first-in-first-out queue would have made them wait about {fifo_wait:.0f} ms "
          f"({statistics.mean(heavy_waiting):.0f} heavy jobs ahead, {statistics.mean(heavy_runs):.0f} ms each)")
    line = f"light wait / light run = {ratio:.2f}x (target <= {TARGET_RATIO:g}x) {verdict(passed)}"
    print(line)
    return passed, line


def main() -> int:
    args = bench_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="vc-fair-") as tmp:
        passed, line = run(Path(tmp))
    write_summary(args.summary_json, "fairness", passed, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
