"""Webhook delivery latency: from an event's ``ts`` (stamped when the primary makes it) to its arrival at
an idle receiver, over the job:queued events of JOBS jobs sent one after another.

The cluster runs with no executor, so the jobs stay queued and nothing but the webhook path is measured:
the event's commit, its delivery row, the signed POST and the receiver's read. The receiver is a
keep-alive HTTP/1.1 server in a thread of this process, on the same clock. Target p99 < 50 ms.

Baseline, measured on the same events in the same run: their arrival on an administrator's WebSocket
(the cluster's own live path), so a loaded machine shows in both figures.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from harness import bench_arguments, running_cluster, verdict, write_summary
from job_bench import make_clip
from websockets.sync.client import connect

JOBS = 200
PACE_S = 0.02  # between job requests: the receiver is idle when each event comes
TARGET_P99_MS = 50.0
DEADLINE_S = 60.0


class Receiver:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.connections: set[tuple[str, int]] = set()
        self.done = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived_ms = time.time() * 1000
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.done:
                    receiver.connections.add(self.client_address)
                    receiver.latencies_ms.append(arrived_ms - json.loads(body)["ts"])
                    receiver.done.notify_all()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int) -> None:
        with self.done:
            if not self.done.wait_for(lambda: len(self.latencies_ms) >= count, DEADLINE_S):
                raise TimeoutError(f"{len(self.latencies_ms)} of {count} deliveries within {DEADLINE_S} s")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebSocketWatcher:
    """Records, for each job:queued event an administrator's WebSocket receives, its arrival minus its ts."""

    def __init__(self, ws_url: str, token: str) -> None:
        self.latencies_ms: list[float] = []
        self._connection = connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for text in self._connection:
                arrived_ms = time.time() * 1000
                message = json.loads(text)
                if message.get("event") == "job:queued":
                    self.latencies_ms.append(arrived_ms - message["ts"])
        except Exception:  # noqa: BLE001, S110 - closed at the end of the run
            pass

    def close(self) -> None:
        self._connection.close()
        self._thread.join(5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def stages(client: httpx.Client, webhook_id: str) -> tuple[list[float], list[float]]:
    """From the deliveries' own records: delivery row -> first try, and the first try itself (the POST)."""
    records = client.get(f"/api/webhooks/{webhook_id}/deliveries", params={"limit": JOBS}).json()
    tries = [(r["createdAt"], r["tries"][0]) for r in records if r["tries"]]
    return [t["at"] - created for created, t in tries], [t["durationMs"] for _, t in tries]


def measure(clip: Path) -> tuple[list[float], list[float], tuple[list[float], list[float]]]:
    receiver = Receiver()
    extra = ["--webhook-allow-private", "--job-rate-per-min", "0", "--max-queued-jobs-per-user", "0"]
    try:
        with running_cluster(workers=1, executors=0, extra_args=extra) as cluster, httpx.Client(
                base_url=cluster.url, headers=cluster.auth_headers, timeout=10, trust_env=False) as client:
            watcher = WebSocketWatcher(cluster.url.replace("http://", "ws://") + "/ws", cluster.token)
            hook = client.post("/api/webhooks", json={"url": receiver.url, "events": ["job:queued"]})
            hook.raise_for_status()
            upload = client.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": clip.name})
            upload.raise_for_status()
            video_id = upload.json()["videoId"]
            for i in range(JOBS):
                answer = client.put("/api/video/resize", json={"videoId": video_id, "width": 32 + 2 * (i % 100),
                                                               "height": 32 + 2 * (i // 100)})
                answer.raise_for_status()
                time.sleep(PACE_S)  # pacing the requests, not waiting for anything
            receiver.wait_for(JOBS)
            watcher.close()
            breakdown = stages(client, hook.json()["webhookId"])
    finally:
        receiver.close()
    print(f"  {len(receiver.connections)} connection(s) to the receiver")
    return receiver.latencies_ms, watcher.latencies_ms, breakdown


def describe(latencies: list[float]) -> str:
    return (f"p50 {statistics.median(latencies):.1f} ms, p90 {percentile(latencies, 0.9):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms")


def main() -> int:
    args = bench_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="vc-webhook-bench-") as tmp:
        latencies, baseline, (waits, posts) = measure(make_clip(Path(tmp)))
    passed = percentile(latencies, 0.99) < TARGET_P99_MS
    line = (f"webhook delivery, event ts -> receiver, {len(latencies)} deliveries: {describe(latencies)} "
            f"(target p99 < {TARGET_P99_MS:g} ms) {verdict(passed)}; baseline, the same events on a WebSocket: "
            f"{describe(baseline)}")
    print(line)
    print(f"  of which: delivery row -> first try {describe(waits)}; the POST {describe(posts)}")
    write_summary(args.summary_json, "webhooks", passed, line)
    return 0  # benchmarks report, tests assert (see run_all.py)


if __name__ == "__main__":
    raise SystemExit(main())
