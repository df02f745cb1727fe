"""Running it in production: rolling reloads, scaling by signal, liveness, recycling (issue 6)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Cluster, ResumingClient, wait_until


class HealthLoad:
    """Steady keep-alive load from a few threads; every failure is kept."""

    def __init__(self, cluster: Cluster, threads: int = 4) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(cluster.url,)) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/api/health")
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"status {response.status_code}")
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def load() -> Iterator[Callable[[Cluster], HealthLoad]]:
    loads: list[HealthLoad] = []

    def make(cluster: Cluster) -> HealthLoad:
        loads.append(HealthLoad(cluster))
        return loads[-1]

    yield make
    for each in loads:
        each.stop()


def replaced(cluster: Cluster, old: set[int], count: int) -> bool:
    pids = set(cluster.pids("web"))
    return len(pids) == count and not pids & old


def test_sighup_rolls_the_web_workers_over_without_a_failed_request_or_a_missed_event(
        cluster_factory: Callable[..., Cluster], clip: Path, load: Callable[[Cluster], HealthLoad]) -> None:
    cluster = cluster_factory(workers=2, executors=1)
    video_id = cluster.upload(clip)
    clients = [ResumingClient(cluster.ws_url, cluster.token) for _ in range(4)]
    try:
        steady = load(cluster)
        old = set(cluster.pids("web"))
        wait_until(lambda: steady.ok > 200, 20, "the load to get going")
        cluster.send_signal(signal.SIGHUP)
        with cluster.client() as client:
            jobs = [client.put("/api/video/resize", json={"videoId": video_id, "width": 64 + 2 * i,
                                                          "height": 48}).json()["jobId"] for i in range(10)]
        wait_until(lambda: replaced(cluster, old, 2), 30, "both web workers to be replaced")
        served_during = steady.ok
        steady.stop()
        assert steady.failures == [], steady.failures[:5]
        assert served_during > 400
        with cluster.client() as client:
            wait_until(lambda: all(client.get(f"/api/jobs/{j}").json()["state"] == "completed" for j in jobs), 60,
                       "the jobs to complete")
        for each in clients:
            wait_until(lambda c=each: set(c.final_states()) >= set(jobs), 30, "the client to see every job end")
            assert each.seqs == sorted(set(each.seqs)), "once each, in order"
            assert each.seqs == list(range(each.seqs[0], each.seqs[-1] + 1)), "no event missed"
        assert any(1012 in each.close_codes for each in clients), "drained workers said 'service restart'"
    finally:
        for each in clients:
            each.close()


def test_reload_by_http_is_for_administrators(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    cluster.add_user("olga", "olga-password")
    old = set(cluster.pids("web"))
    with cluster.client(cluster.login("olga", "olga-password")) as client:
        assert client.post("/api/admin/reload").status_code == 403
    with cluster.client() as client:
        assert client.post("/api/admin/reload").json() == {"reloading": True}
    wait_until(lambda: replaced(cluster, old, 1), 30, "the web worker to be replaced")


def break_worker_boot(cluster: Cluster) -> Path:
    """New web workers cannot prepare their temp dir: they fail to boot (running ones are unaffected)."""
    temp = cluster.data_dir / "storage" / ".tmp"
    temp.rmdir()
    temp.write_text("not a directory")
    return temp


def mend_worker_boot(temp: Path) -> None:
    temp.unlink()
    temp.mkdir()


def test_a_worker_that_fails_to_boot_stops_the_reload_and_the_old_ones_stay(
        cluster_factory: Callable[..., Cluster], load: Callable[[Cluster], HealthLoad]) -> None:
    cluster = cluster_factory(workers=2, executors=0)
    old = set(cluster.pids("web"))
    temp = break_worker_boot(cluster)
    try:
        steady = load(cluster)
        cluster.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload stopped" in cluster.log_path.read_text(), 30, "the reload to give up")
        steady.stop()
    finally:
        mend_worker_boot(temp)
    wait_until(lambda: set(cluster.pids("web")) == old, 5, "the failed new worker to be gone")  # health is cached
    assert steady.failures == [] and steady.ok > 0


def test_signals_scale_web_workers_and_executors(cluster_factory: Callable[..., Cluster], long_clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    cluster.send_signal(signal.SIGTTIN)
    wait_until(lambda: len(cluster.pids("web")) == 2, 20, "a second web worker")
    cluster.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(cluster.pids("web")) == 1, 20, "back to one web worker")
    cluster.send_signal(signal.SIGUSR1)
    wait_until(lambda: len(cluster.executor_pids()) == 2, 20, "a second executor")

    video_id = cluster.upload(long_clip)
    job_id = cluster.convert(video_id, "webm").json()["jobId"]
    with cluster.client() as client:
        running = wait_until(lambda: client.get(f"/api/jobs/{job_id}").json()["executor"], 20, "the job to start")
        busy_pid = int(running.rsplit("-", 1)[1])
        idle_pid = next(pid for pid in cluster.executor_pids() if pid != busy_pid)
        cluster.send_signal(signal.SIGUSR2)  # the idle executor goes at once
        wait_until(lambda: cluster.executor_pids() == [busy_pid], 20, "the idle executor to go")
        cluster.send_signal(signal.SIGUSR1)
        wait_until(lambda: len(cluster.executor_pids()) == 2, 20, "an executor again")
        assert idle_pid not in cluster.executor_pids()


def test_a_busy_executor_removed_by_signal_finishes_its_job_first(cluster_factory: Callable[..., Cluster],
                                                                   long_clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=1)
    cluster.send_signal(signal.SIGUSR1)
    wait_until(lambda: len(cluster.executor_pids()) == 2, 20, "two executors")
    video_id = cluster.upload(long_clip)
    with cluster.client() as client:
        first = cluster.convert(video_id, "webm").json()["jobId"]
        second = cluster.convert(video_id, "mkv").json()["jobId"]
        wait_until(lambda: all(client.get(f"/api/jobs/{j}").json()["state"] == "running" for j in (first, second)),
                   20, "both jobs to run")
        cluster.send_signal(signal.SIGUSR2)
        wait_until(lambda: all(client.get(f"/api/jobs/{j}").json()["state"] == "completed" for j in (first, second)),
                   90, "both jobs to complete")
        jobs = [client.get(f"/api/jobs/{j}").json() for j in (first, second)]
    assert [j["attempts"] for j in jobs] == [1, 1], "no job was interrupted"
    wait_until(lambda: len(cluster.executor_pids()) == 1, 20, "one executor left")


def test_a_stuck_web_worker_is_killed_and_replaced(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--worker-timeout-s", "2"])
    victim = cluster.pids("web")[0]
    os.kill(victim, signal.SIGSTOP)  # alive, but its event loop runs no more
    try:
        wait_until(lambda: victim not in cluster.pids("web") and len(cluster.pids("web")) == 2, 20,
                   "the stuck worker to be replaced")
    finally:
        with pytest.raises(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    assert "web worker stopped answering" in cluster.log_path.read_text()


def test_a_crash_looping_worker_is_restarted_with_a_growing_delay(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=2, executors=0)
    temp = break_worker_boot(cluster)
    try:
        os.kill(cluster.pids("web")[0], signal.SIGKILL)
        wait_until(lambda: cluster.log_path.read_text().count("child keeps dying") >= 3, 30,
                   "several delayed restarts")
        log = cluster.log_path.read_text()
        assert '"delayS": 0.2' in log and '"delayS": 0.4' in log
        assert cluster.health()["status"] == "ok", "the other worker serves meanwhile"
    finally:
        mend_worker_boot(temp)
    wait_until(lambda: len(cluster.pids("web")) == 2, 30, "the worker to come back once it can boot")


def test_workers_are_recycled_after_their_request_budget(cluster_factory: Callable[..., Cluster],
                                                         load: Callable[[Cluster], HealthLoad]) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--max-requests", "200", "--max-requests-jitter", "20"])
    old = set(cluster.pids("web"))
    steady = load(cluster)
    wait_until(lambda: not set(cluster.pids("web")) & old and len(cluster.pids("web")) == 2, 60,
               "both workers to be recycled")
    steady.stop()
    assert steady.failures == [], steady.failures[:5]
    assert "asking to be recycled" in cluster.log_path.read_text()
