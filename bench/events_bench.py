"""Event fan-out latency: from a job request to each WebSocket client's receipt of that job's job:queued.

The cluster runs with 2 web workers and no executors (jobs stay queued). Client processes (spawned) open
the /ws connections; the driver sends one resize request every 50 ms and notes each send time on
CLOCK_MONOTONIC, which is system-wide on Linux, so the clients' receive times compare with it directly.

Two cases. fan-out: every client in the room of the same video, so each event goes to all of them.
rooms: 10,000 clients, each in the room of a video of its own (the videos are added to the store
directly: uploading 10,000 clips would take the run's whole time), the jobs spread over the rooms; each
event must reach its room's one client and nobody else, within 2x of the p99 of 10 such clients, and
each idle connection may cost the web workers under 20 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar

import httpx
import imageio_ffmpeg
import lean_ws
import psutil
import uvloop
from harness import Cluster, exit_on_sigterm, raise_fd_limit, running_cluster, verdict, write_summary

from primary.store import JobStore

WORKERS = 2
CLIENT_PROCESSES = 4
CLIENT_COUNTS = (10, 1000)
JOBS = 100
SEND_INTERVAL_S = 0.05
TARGET_P99_MS = 25.0
CONNECT_CONCURRENCY = 50  # per client process: handshakes in flight at once
CONNECT_TIMEOUT_S = 300.0
DELIVERY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
FLUSH_INTERVAL_S = 0.05
FD_HEADROOM = 256
CLUSTER_ARGS = ("--max-ws-per-user", "0")  # every client is the one bench administrator: lift the per-user cap
ROOM_CLIENT_COUNTS = (10, 10_000)  # the baseline, then the case against the targets
ROOM_JOBS = 200
ROOM_STRIDE = 7919  # job i goes to the room of client (i * ROOM_STRIDE) % clients: spread over the rooms
TARGET_ROOMS_RATIO = 2.0
TARGET_IDLE_KB = 20.0
IDLE_SETTLE_S = 1.0  # after connecting: the hold for a resume ends, the connections are idle
ROOM_CLUSTER_ARGS = (*CLUSTER_ARGS, "--max-ws-per-worker", "0", "--job-rate-per-min", "0",
                     "--max-queued-jobs-per-user", "0")

Record = tuple[int, str, float]  # (client id, jobId, monotonic receive time)
_widths = itertools.count(16, 2)  # each request a width of its own (none deduplicated), from the least a side takes


# client processes


def client_process(url: str, headers: dict[str, str], first_id: int, video_ids: list[str],
                   reports: Connection, stop: Connection) -> None:
    """Open one connection per video id, each in that video's room, say "connected", send job:queued
    records until `stop` is closed.

    Two one-way pipes: the event loop watches `stop` (which makes it non-blocking), `reports` stays blocking.
    """
    raise_fd_limit(len(video_ids) + FD_HEADROOM)
    try:
        closed = uvloop.run(_client_main(url, headers, first_id, video_ids, reports, stop))
    except Exception as e:
        reports.send(("error", f"client process {first_id}: {e!r}"))
        raise
    reports.send(("done", closed))


async def _client_main(url: str, headers: dict[str, str], first_id: int, video_ids: list[str],
                       reports: Connection, stop: Connection) -> int:
    """Returns how many connections the server closed before the driver said stop."""
    stopped = _when_closed(stop)
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    records: list[Record] = []
    connects = (_subscribe(url, headers, video_id, gate, first_id + i, records) for i, video_id in enumerate(video_ids))
    sockets = await asyncio.wait_for(asyncio.gather(*connects), CONNECT_TIMEOUT_S)
    readers = [ws.closed for ws in sockets]
    reports.send(("connected", len(video_ids)))
    while not stopped.done():
        await asyncio.wait([stopped], timeout=FLUSH_INTERVAL_S)
        _flush(records, reports)
    closed = sum(reader.done() for reader in readers)
    for ws in sockets:
        ws.close()
    _flush(records, reports)
    return closed


def _when_closed(stop: Connection) -> asyncio.Future[None]:
    """Done once the driver closes its end of `stop` (or dies): the pipe turns readable at EOF."""
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def on_readable() -> None:
        loop.remove_reader(stop.fileno())
        stopped.set_result(None)

    loop.add_reader(stop.fileno(), on_readable)
    return stopped


QUEUED_MARK = b'"event":"job:queued"'
JOB_ID_MARK = b'"jobId":"'
SUBSCRIBED_MARK = b'"type": "subscribed"'


async def _subscribe(url: str, headers: dict[str, str], video_id: str, gate: asyncio.Semaphore, client_id: int,
                     records: list[Record]) -> lean_ws.LeanWebSocket:
    """Connect and wait for the server's "subscribed" reply: from then on the hub delivers to this client."""
    subscribed = asyncio.get_running_loop().create_future()

    def on_text(payload: bytes) -> None:
        received = time.monotonic()
        if payload.startswith(QUEUED_MARK, 1):
            start = payload.index(JOB_ID_MARK) + len(JOB_ID_MARK)
            records.append((client_id, payload[start:payload.index(b'"', start)].decode(), received))
        elif SUBSCRIBED_MARK in payload and not subscribed.done():
            subscribed.set_result(None)

    async with gate:
        ws = await lean_ws.connect(url, headers, on_text)
        ws.send_text(json.dumps({"type": "subscribe-video", "videoId": video_id}))
        await subscribed
        return ws


def _flush(records: list[Record], reports: Connection) -> None:
    if records:
        reports.send(("records", records.copy()))
        records.clear()


# the driver's side of the clients


@dataclass
class Collector:
    """Drains the client processes' report pipes on a thread of its own, so that no client waits on a send."""

    reports: list[Connection]
    connected: int = 0
    closed_by_server: int = 0
    errors: list[str] = field(default_factory=list)
    arrivals: dict[str, Counter[int]] = field(default_factory=dict)  # jobId -> receipts per client
    times: list[Record] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        """Until every client process has hung up; one that hangs up before saying "done" has failed."""
        open_pipes, done = list(self.reports), set()
        while open_pipes:
            for pipe in wait(open_pipes):
                try:
                    message = pipe.recv()
                except (EOFError, OSError):
                    open_pipes.remove(pipe)
                    if pipe not in done:
                        self._handle(("error", "a client process exited without a word"))
                    continue
                if message[0] == "done":
                    done.add(pipe)
                self._handle(message)

    def _handle(self, message: tuple[str, Any]) -> None:
        kind, value = message
        with self.changed:
            if kind == "records":
                for client_id, job_id, _ in value:
                    self.arrivals.setdefault(job_id, Counter())[client_id] += 1
                self.times.extend(value)
            elif kind == "connected":
                self.connected += value
            elif kind == "done":
                self.closed_by_server += value
            elif kind == "error":
                self.errors.append(value)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until predicate() holds (True) or the deadline passes (False); raise if a client process fails."""
        with self.changed:
            ok = self.changed.wait_for(lambda: bool(self.errors) or predicate(), timeout_s)
            if self.errors:
                raise RuntimeError("; ".join(self.errors))
            return bool(ok)

    def require(self, what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
        if not self.wait_for(predicate, timeout_s):
            raise TimeoutError(f"{what}: not within {timeout_s} s")

    def reached(self, job_id: str, client_id: int) -> bool:
        return client_id in self.arrivals.get(job_id, ())

    def delivered(self, job_ids: list[str], clients: int) -> bool:
        return all(len(self.arrivals.get(job_id, ())) == clients for job_id in job_ids)


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


@dataclass
class ClientPool:
    """The spawned client processes, the pipes to and from them, and the collector thread."""

    processes: list[multiprocessing.process.BaseProcess]
    stops: list[Connection]
    collector: Collector
    thread: threading.Thread

    def stop(self) -> None:
        """Tell every client to flush and stop (by closing its stop pipe), wait for them, kill any that hang."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for pipe in self.stops:
            pipe.close()
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_S)
        self.thread.join(STOP_TIMEOUT_S)  # ends once every report pipe has hung up
        for pipe in self.collector.reports:
            pipe.close()


def start_clients(ws_url: str, headers: dict[str, str], video_ids: list[str]) -> ClientPool:
    """One client connection per entry of `video_ids`, in that video's room."""
    context = multiprocessing.get_context("spawn")
    processes, reports, stops, first_id = [], [], [], 0
    for count in shares(len(video_ids), min(CLIENT_PROCESSES, len(video_ids))):
        report_reader, report_writer = context.Pipe(duplex=False)
        stop_reader, stop_writer = context.Pipe(duplex=False)
        process = context.Process(target=client_process, daemon=True,
                                  args=(ws_url, headers, first_id, video_ids[first_id:first_id + count],
                                        report_writer, stop_reader))
        process.start()
        report_writer.close()
        stop_reader.close()
        processes.append(process)
        reports.append(report_reader)
        stops.append(stop_writer)
        first_id += count
    collector = Collector(reports)
    thread = threading.Thread(target=collector.run, name="collector", daemon=True)
    thread.start()
    return ClientPool(processes, stops, collector, thread)


# the driver


def submit_resize(http: httpx.Client, video_id: str) -> str:
    response = http.put("/api/video/resize", json={"videoId": video_id, "width": next(_widths), "height": 240})
    if response.status_code != 202:
        raise RuntimeError(f"resize answered {response.status_code}: {response.text}")
    return response.json()["jobId"]


def on_schedule(count: int) -> Iterator[int]:
    """0 .. count-1, each at its moment on a fixed schedule of one every SEND_INTERVAL_S (the pacing of a load)."""
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * SEND_INTERVAL_S - time.monotonic()))
        yield i


def send_jobs(http: httpx.Client, video_id: str, count: int) -> dict[str, float]:
    """One request every SEND_INTERVAL_S; jobId -> monotonic send time."""
    sent: dict[str, float] = {}
    for _ in on_schedule(count):
        send_time = time.monotonic()
        sent[submit_resize(http, video_id)] = send_time
    return sent


@dataclass(frozen=True)
class Result:
    clients: int
    latencies_ms: list[float]
    missing: int
    duplicates: int
    closed_by_server: int

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.duplicates == 0

    def percentile(self, p: float) -> float:
        """Nearest rank; NaN if nothing was received."""
        if not self.latencies_ms:
            return float("nan")
        ranked = sorted(self.latencies_ms)
        return ranked[min(len(ranked) - 1, max(0, round(p / 100 * len(ranked)) - 1))]


def analyse(collector: Collector, sent: dict[str, float], clients: int) -> Result:
    first_receipts: dict[tuple[int, str], float] = {}
    for client_id, job_id, received in collector.times:
        if job_id in sent:
            first_receipts.setdefault((client_id, job_id), received)
    duplicates = sum(n - 1 for job_id in sent for n in collector.arrivals.get(job_id, Counter()).values())
    latencies = [(received - sent[job_id]) * 1000 for (_, job_id), received in first_receipts.items()]
    return Result(clients, latencies, clients * len(sent) - len(first_receipts), duplicates,
                  collector.closed_by_server)


def measure(cluster: Cluster, video_id: str, clients: int) -> Result:
    """Connect `clients` WebSockets, warm the path up with one job, then time JOBS jobs."""
    pool = start_clients(ws_url(cluster), cluster.auth_headers, [video_id] * clients)
    collector = pool.collector
    sent: dict[str, float] = {}
    try:
        collector.require("clients connected", lambda: collector.connected == clients, CONNECT_TIMEOUT_S)
        with httpx.Client(base_url=cluster.url, headers=cluster.auth_headers, timeout=10.0, trust_env=False) as http:
            warmup = [submit_resize(http, video_id)]
            collector.require("warm-up event", lambda: collector.delivered(warmup, clients), DELIVERY_TIMEOUT_S)
            sent = send_jobs(http, video_id, JOBS)
        # past the deadline, whatever is missing is reported as missing
        collector.wait_for(lambda: collector.delivered(list(sent), clients), DELIVERY_TIMEOUT_S)
    finally:
        pool.stop()
    return analyse(collector, sent, clients)


def make_clip(directory: Path) -> Path:
    clip = directory / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(clip)],
                   check=True, timeout=60)
    return clip


def upload(cluster: Cluster, clip: Path) -> str:
    response = httpx.post(cluster.url + "/api/upload-video", content=clip.read_bytes(),
                          headers={"filename": clip.name, **cluster.auth_headers}, timeout=30.0, trust_env=False)
    if response.status_code != 201:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text}")
    return response.json()["videoId"]


@contextmanager
def cluster_with_a_video(descriptors: int, name: str, extra_args: tuple[str, ...]) -> Iterator[tuple[Cluster, str]]:
    """A cluster without executors whose web workers may hold ``descriptors`` sockets, and one uploaded clip."""
    raise_fd_limit(descriptors + FD_HEADROOM)  # the web workers inherit it (at most the hard limit)
    with tempfile.TemporaryDirectory(prefix=f"vc-bench-{name}-") as tmp, \
            running_cluster(WORKERS, executors=0, extra_args=extra_args) as cluster:
        yield cluster, upload(cluster, make_clip(Path(tmp)))


R = TypeVar("R", bound=Result)


def printed(label: str, result: R) -> R:
    print(f"  {label}: p99 {result.percentile(99):.1f} ms", flush=True)
    return result


def run(client_counts: tuple[int, ...]) -> list[Result]:
    with cluster_with_a_video(max(client_counts), "events", CLUSTER_ARGS) as (cluster, video_id):
        return [printed(f"{clients} clients", measure(cluster, video_id, clients)) for clients in client_counts]


def report(results: list[Result]) -> tuple[bool, str]:
    print(f"\njob:queued fan-out latency, {JOBS} jobs one every {SEND_INTERVAL_S * 1000:.0f} ms, "
          f"{WORKERS} web workers, {CLIENT_PROCESSES} client processes")
    print(f"{'clients':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  {'exactly once':14}"
          f"{'target':16}result")
    *baselines, top = results
    for result in baselines:
        print(_row(result) + "(baseline)")
    passed = top.exactly_once and top.percentile(99) <= TARGET_P99_MS
    print(_row(top) + f"{f'p99 <= {TARGET_P99_MS:g} ms':16}{verdict(passed)}")
    line = (f"events: p99 {top.percentile(99):.1f} ms at {top.clients} clients (target <= {TARGET_P99_MS} ms), "
            f"{results[0].percentile(99):.1f} ms at {results[0].clients}; exactly once: "
            f"{'yes' if all(r.exactly_once for r in results) else 'NO'}")
    return passed, line


def _row(result: Result) -> str:
    figures = "".join(f"{result.percentile(p):9.1f}" for p in (50, 95, 99, 100))
    return f"{result.clients:8d}{figures}  {_delivery(result):14}"


def _delivery(result: Result) -> str:
    if isinstance(result, RoomsResult) and result.misrouted:
        return f"NO: {result.misrouted} misrouted"
    if result.exactly_once:
        return "yes"
    return f"NO: {result.missing} missing, {result.duplicates} duplicates, {result.closed_by_server} dropped"


# the rooms case


@dataclass(frozen=True)
class RoomsResult(Result):
    misrouted: int = 0  # receipts at a client whose room the job was not in
    idle_bytes_per_connection: float = float("nan")

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.duplicates == 0 and self.misrouted == 0


def add_videos(cluster: Cluster, template_id: str, count: int) -> list[str]:
    """`count` videos like the uploaded one, owned by the same user, straight into the cluster's store."""
    store = JobStore(cluster.server.log_path.parent / "data" / "cluster.db")  # running_cluster's layout
    try:
        template = store.get_video(template_id)
        if template is None:
            raise RuntimeError(f"video {template_id} is not in the store")
        video_ids = [secrets.token_hex(8) for _ in range(count)]
        for i, video_id in enumerate(video_ids):
            store.add_video(video_id, template["owner"], f"room-{i}.mp4", template["info"], time.time() * 1000)
    finally:
        store.close()
    return video_ids


def web_rss_bytes(cluster: Cluster) -> int:
    health = httpx.get(cluster.url + "/api/health", headers=cluster.auth_headers, timeout=10.0, trust_env=False).json()
    return sum(psutil.Process(p["pid"]).memory_info().rss for p in health["processes"] if p["role"] == "web")


def send_room_jobs(http: httpx.Client, video_ids: list[str], count: int) -> dict[str, tuple[float, int]]:
    """One request every SEND_INTERVAL_S, each to another room; jobId -> (monotonic send time, client id)."""
    sent: dict[str, tuple[float, int]] = {}
    for i in on_schedule(count):
        client_id = (i * ROOM_STRIDE) % len(video_ids)
        send_time = time.monotonic()
        sent[submit_resize(http, video_ids[client_id])] = (send_time, client_id)
    return sent


def measure_rooms(cluster: Cluster, video_ids: list[str]) -> RoomsResult:
    clients = len(video_ids)
    before = web_rss_bytes(cluster)
    pool = start_clients(ws_url(cluster), cluster.auth_headers, video_ids)
    collector = pool.collector
    sent: dict[str, tuple[float, int]] = {}
    try:
        collector.require("clients connected", lambda: collector.connected == clients, CONNECT_TIMEOUT_S)
        time.sleep(IDLE_SETTLE_S)
        idle = (web_rss_bytes(cluster) - before) / clients
        with httpx.Client(base_url=cluster.url, headers=cluster.auth_headers, timeout=10.0, trust_env=False) as http:
            warmup = [submit_resize(http, video_ids[0])]
            if not collector.wait_for(lambda: collector.reached(warmup[0], 0), DELIVERY_TIMEOUT_S):
                receipts = dict(collector.arrivals.get(warmup[0], {}))
                raise TimeoutError(f"the warm-up job's event did not reach its room's client within "
                                   f"{DELIVERY_TIMEOUT_S} s; receipts by client: {receipts}")
            sent = send_room_jobs(http, video_ids, ROOM_JOBS)
        collector.wait_for(lambda: all(collector.reached(job_id, c) for job_id, (_, c) in sent.items()),
                           DELIVERY_TIMEOUT_S)
    finally:
        pool.stop()
    return analyse_rooms(collector, sent, clients, idle)


def analyse_rooms(collector: Collector, sent: dict[str, tuple[float, int]], clients: int, idle: float) -> RoomsResult:
    first_receipt: dict[str, float] = {}
    for client_id, job_id, received in collector.times:
        if job_id in sent and client_id == sent[job_id][1]:
            first_receipt.setdefault(job_id, received)
    arrivals = {job_id: collector.arrivals.get(job_id, Counter()) for job_id in sent}
    misrouted = sum(n for job_id, counts in arrivals.items() for client_id, n in counts.items()
                    if client_id != sent[job_id][1])
    duplicates = sum(max(0, counts[sent[job_id][1]] - 1) for job_id, counts in arrivals.items())
    latencies = [(received - sent[job_id][0]) * 1000 for job_id, received in first_receipt.items()]
    return RoomsResult(clients, latencies, len(sent) - len(first_receipt), duplicates, collector.closed_by_server,
                       misrouted, idle)


def run_rooms(client_counts: tuple[int, ...]) -> list[RoomsResult]:
    with cluster_with_a_video(2 * max(client_counts), "rooms", ROOM_CLUSTER_ARGS) as (cluster, template_id):
        video_ids = add_videos(cluster, template_id, max(client_counts))
        return [printed(f"rooms, {clients} clients", measure_rooms(cluster, video_ids[:clients]))
                for clients in client_counts]


def report_rooms(results: list[RoomsResult]) -> tuple[bool, str]:
    print(f"\nrooms: job:queued at the room's one client, {ROOM_JOBS} jobs one every {SEND_INTERVAL_S * 1000:.0f} ms "
          f"spread over the rooms, {WORKERS} web workers")
    print(f"{'clients':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  {'exactly once':14}{'idle KB/conn':>13}")
    for result in results:
        kb = result.idle_bytes_per_connection / 1024
        print(_row(result) + (f"{kb:13.1f}" if result.clients >= 1000 else f"{'':13}"))
    baseline, top = results[0], results[-1]
    ratio = top.percentile(99) / baseline.percentile(99)
    idle_kb = top.idle_bytes_per_connection / 1024
    fast = ratio <= TARGET_ROOMS_RATIO
    lean = idle_kb < TARGET_IDLE_KB
    passed = all(r.exactly_once for r in results) and fast and lean
    print(f"p99 at {top.clients} / p99 at {baseline.clients}: {ratio:.2f}x (target <= {TARGET_ROOMS_RATIO:g}x) "
          f"{verdict(fast)}; {idle_kb:.1f} KB per idle connection (target < {TARGET_IDLE_KB:g} KB) {verdict(lean)}")
    line = (f"rooms: p99 {top.percentile(99):.1f} ms at {top.clients} clients, {ratio:.2f}x the {baseline.clients}-client "
            f"baseline (target <= {TARGET_ROOMS_RATIO:g}x), {idle_kb:.1f} KB per idle connection (target < "
            f"{TARGET_IDLE_KB:g}); exactly once: {'yes' if all(r.exactly_once for r in results) else 'NO'}")
    return passed, line


def ws_url(cluster: Cluster) -> str:
    return cluster.url.replace("http://", "ws://") + "/ws"


def main() -> int:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENT_COUNTS),
                        help="fan-out client counts, the last one against the target, the others as baselines")
    parser.add_argument("--room-clients", type=int, nargs="+", default=list(ROOM_CLIENT_COUNTS),
                        help="rooms client counts: the first is the baseline, the last is held to the targets")
    parser.add_argument("--cases", nargs="+", choices=("fanout", "rooms"), default=["fanout", "rooms"])
    parser.add_argument("--summary-json", type=Path, help="write the verdict here (for run_all.py)")
    args = parser.parse_args()
    verdicts = []
    if "fanout" in args.cases:
        verdicts.append(report(run(tuple(args.clients))))
    if "rooms" in args.cases:
        verdicts.append(report_rooms(run_rooms(tuple(args.room_clients))))
    write_summary(args.summary_json, "events", all(ok for ok, _ in verdicts), "; ".join(line for _, line in verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
