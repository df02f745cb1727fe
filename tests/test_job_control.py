"""Jobs that are never lost: error classes, dead letters, cancel, priority, de-duplication, timeouts,
stalls and queue control, on real clusters with real ffmpeg."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import psutil

from cluster.media import find_ffmpeg, probe
from cluster.protocol import Priority
from tests.harness import Cluster, EventClient, wait_until

Message = dict[str, Any]


# helpers shared with tests/test_shutdown.py


def ffmpeg_wrapper(tmp_path: Path, *, crash_on: str | None = None, pid_log: Path | None = None) -> Path:
    """An ffmpeg that behaves like the real one, except for job runs (those with ``-progress``):

    - ``crash_on``: a job run with an argument containing this text prints "simulated crash" on stderr and dies
      of SIGSEGV (``""`` crashes every job run);
    - ``pid_log``: a job run starts the real ffmpeg as a child of the wrapper (not exec), so that only a kill of
      the whole process group reaches it, and appends "<wrapper pid> <ffmpeg pid>" to this file.
    """
    real = find_ffmpeg()
    lines = ["#!/bin/sh", "job=0", "crash=0", 'for arg in "$@"; do', '  [ "$arg" = "-progress" ] && job=1']
    if crash_on is not None:
        lines.append(f'  case "$arg" in *"{crash_on}"*) crash=1 ;; esac')
    lines += ["done",
              'if [ $job = 1 ] && [ $crash = 1 ]; then echo "simulated crash" >&2; kill -SEGV $$; fi']
    if pid_log is not None:
        lines += ["if [ $job = 1 ]; then", f'  "{real}" "$@" &', f'  echo "$$ $!" >> "{pid_log}"',
                  "  wait $!", "  exit $?", "fi"]
    lines.append(f'exec "{real}" "$@"')
    script = tmp_path / f"ffmpeg-wrapper-{len(list(tmp_path.glob('ffmpeg-wrapper-*')))}"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def wait_queue_event(ws: EventClient, name: str, timeout_s: float = 10.0) -> Message:
    ws.wait_for(lambda messages: any(m.get("event") == name for m in messages), timeout_s, name)
    return ws.events(name=name)[0]


def names(ws: EventClient, job_id: str) -> list[str]:
    return [m["event"] for m in ws.events(job_id)]


def events_after(ws: EventClient, job_id: str, event: Message) -> list[str]:
    return [m["event"] for m in ws.events(job_id) if m["seq"] > event["seq"]]


def request(cluster: Cluster, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with cluster.client() as client:
        return client.request(method, path, **kwargs)


def gone(process: psutil.Process | int) -> bool:
    try:
        process = process if isinstance(process, psutil.Process) else psutil.Process(process)
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def partials(cluster: Cluster, video_id: str) -> list[Path]:
    return list((cluster.data_dir / "storage" / video_id).glob(".*.part"))


# 1. error classes and per-type policies


def test_a_missing_source_fails_permanently_at_once(cluster_factory: Callable[..., Cluster], clip: Path,
                                                     ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    (cluster.data_dir / "storage" / video_id / "original.mp4").unlink()
    ws = ws_factory(cluster)
    job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
    final = ws.wait_event("job:permanent-failure", job_id)["data"]
    assert final["totalAttempts"] == 1 and "source missing" in final["error"]
    assert names(ws, job_id) == ["job:queued", "job:started", "job:permanent-failure"]
    job = cluster.job(job_id)
    assert job["state"] == "dead" and job["attempts"] == 1


def test_an_undecodable_input_fails_permanently_at_once(cluster_factory: Callable[..., Cluster], clip: Path,
                                                        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    (cluster.data_dir / "storage" / video_id / "original.mp4").write_bytes(b"this is no video any more\n" * 4096)
    ws = ws_factory(cluster)
    job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
    final = ws.wait_event("job:permanent-failure", job_id)["data"]
    assert "unreadable input" in final["error"]
    assert final["totalAttempts"] == 1
    assert "job:failed" not in names(ws, job_id)
    assert cluster.job(job_id)["state"] == "dead"


def test_a_crash_is_retried_under_the_policy_of_its_job_type(cluster_factory: Callable[..., Cluster], clip: Path,
                                                             tmp_path: Path,
                                                             ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="")),
                                                "--job-policies", "resize:retries=1,backoff_ms=50"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    resize = cluster.resize(video_id, 160, 120).json()["jobId"]
    convert = cluster.convert(video_id, "webm").json()["jobId"]

    resize_final = ws.wait_event("job:permanent-failure", resize)["data"]
    assert resize_final["totalAttempts"] == 2
    failures = [m["data"] for m in ws.events(resize, "job:failed")]
    assert [(f["currentAttempt"], f["maxRetries"], f["retryInMs"]) for f in failures] == [(0, 1, 50)]
    assert "SIGSEGV" in failures[0]["error"]

    convert_final = ws.wait_event("job:permanent-failure", convert)["data"]
    assert convert_final["totalAttempts"] == 4
    failures = [m["data"] for m in ws.events(convert, "job:failed")]
    assert [f["retryInMs"] for f in failures] == [100, 200, 400]
    assert all(f["maxRetries"] == 3 and "SIGSEGV" in f["error"] for f in failures)
    assert (cluster.job(resize)["maxRetries"], cluster.job(convert)["maxRetries"]) == (1, 3)


# 2. dead letters and retry


def test_the_dead_letter_list_details_every_attempt_and_a_dead_job_can_be_retried(
        cluster_factory: Callable[..., Cluster], clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="96x72")),
                                                "--job-policies", "resize:retries=1,backoff_ms=50"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    dead = cluster.resize(video_id, 96, 72).json()["jobId"]
    assert ws.wait_event("job:permanent-failure", dead)["data"]["totalAttempts"] == 2
    done = cluster.resize(video_id, 160, 120).json()["jobId"]
    ws.wait_event("job:completed", done)

    letters = request(cluster, "GET", "/api/queue/dead-letter").json()
    assert [letter["jobId"] for letter in letters] == [dead]
    assert letters[0]["state"] == "dead"
    details = letters[0]["attemptsDetail"]
    assert [d["attempt"] for d in details] == [1, 2]
    assert all(d["outcome"] == "failed" and "SIGSEGV" in d["error"] for d in details)
    assert all("simulated crash" in d["stderrTail"] for d in details)
    assert all("command" in d for d in details)

    for job_id, status in ((done, 409), ("resize-abc123-1", 404)):
        response = request(cluster, "POST", f"/api/jobs/{job_id}/retry")
        assert response.status_code == status and response.json()["error"]

    assert request(cluster, "POST", "/api/queue/pause").json() == {"paused": True}
    response = request(cluster, "POST", f"/api/jobs/{dead}/retry")
    assert response.status_code == 202 and response.json() == {"jobId": dead, "state": "queued"}
    requeued = ws.wait_event("job:queued", dead, count=3)["data"]  # attempts 0 and 1, then the retry
    assert requeued["attempt"] == 0
    job = cluster.job(dead)
    assert (job["state"], job["attempts"], job["error"]) == ("queued", 0, None)
    assert request(cluster, "POST", f"/api/jobs/{dead}/retry").status_code == 409, "a queued job is not retried"
    assert request(cluster, "GET", "/api/queue/dead-letter").json() == []

    request(cluster, "POST", "/api/queue/resume")
    again = ws.wait_event("job:permanent-failure", dead, count=2)["data"]
    assert again["totalAttempts"] == 2, "a retried job gets fresh attempts"


def test_the_dead_letter_list_shows_the_ffmpeg_command_of_each_attempt(
        cluster_factory: Callable[..., Cluster], clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="")),
                                                "--job-policies", "resize:retries=0"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
    ws.wait_event("job:permanent-failure", job_id)
    [letter] = request(cluster, "GET", "/api/queue/dead-letter").json()
    command = letter["attemptsDetail"][0]["command"]
    assert isinstance(command, str), f"command is {command!r}"
    assert "-progress" in command and "pad=160:120" in command and "original.mp4" in command


# 3. cancel


def test_cancelling_a_queued_job(cluster_factory: Callable[..., Cluster], clip: Path,
                                 ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    request(cluster, "POST", "/api/queue/pause")  # the executor takes nothing: jobs stay queued
    victim = cluster.resize(video_id, 160, 120).json()["jobId"]
    other = cluster.resize(video_id, 128, 96).json()["jobId"]
    assert cluster.job(victim)["state"] == "queued"

    response = request(cluster, "DELETE", f"/api/jobs/{victim}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    cancelled = ws.wait_event("job:cancelled", victim)
    assert cluster.job(victim)["state"] == "cancelled"
    assert request(cluster, "GET", "/api/queue/stats").json()["queueLength"] == 1

    request(cluster, "POST", "/api/queue/resume")
    ws.wait_event("job:completed", other)  # the executor has moved past where the victim stood
    assert events_after(ws, victim, cancelled) == []
    assert names(ws, victim) == ["job:queued", "job:cancelled"]
    assert not (cluster.data_dir / "storage" / video_id / "160x120.mp4").exists()


def test_cancelling_a_delayed_job_cancels_its_retry(cluster_factory: Callable[..., Cluster], clip: Path,
                                                    long_clip: Path, tmp_path: Path,
                                                    ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="160x120")),
                                                "--retry-initial-ms", "1500"])
    video_id = cluster.upload(clip)
    long_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    victim = cluster.resize(video_id, 160, 120).json()["jobId"]
    failed = ws.wait_event("job:failed", victim)
    response = request(cluster, "DELETE", f"/api/jobs/{victim}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    cancelled = ws.wait_event("job:cancelled", victim)
    assert cluster.job(victim)["state"] == "cancelled"

    other = cluster.convert(long_id, "webm").json()["jobId"]  # runs well past the cancelled retry's due time
    completed = ws.wait_event("job:completed", other, timeout_s=60)
    assert completed["ts"] > failed["data"]["failedAt"] + failed["data"]["retryInMs"], "the retry was due meanwhile"
    assert events_after(ws, victim, cancelled) == []
    assert cluster.job(victim)["state"] == "cancelled"


def test_cancelling_a_running_job_kills_its_ffmpeg(cluster_factory: Callable[..., Cluster], clip: Path,
                                                   long_clip: Path,
                                                   ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    long_id = cluster.upload(long_clip)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    victim = cluster.convert(long_id, "webm").json()["jobId"]
    ws.wait_event("job:progress", victim)
    running = cluster.ffmpeg_processes()
    assert running, "ffmpeg is running"
    assert partials(cluster, long_id), "ffmpeg writes its partial output"

    response = request(cluster, "DELETE", f"/api/jobs/{victim}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    wait_until(lambda: all(gone(p) for p in running), 1.0, "the cancelled job's ffmpeg to be killed")
    cancelled = ws.wait_event("job:cancelled", victim)
    assert cluster.job(victim)["state"] == "cancelled"

    other = cluster.resize(video_id, 160, 120).json()["jobId"]
    ws.wait_event("job:completed", other)
    assert events_after(ws, victim, cancelled) == []
    assert names(ws, victim).count("job:started") == 1
    assert partials(cluster, long_id) == [] and not (cluster.data_dir / "storage" / long_id / "converted.webm").exists()
    for job_id, status in ((victim, 409), (other, 409), ("convert-abc123-1", 404)):
        response = request(cluster, "DELETE", f"/api/jobs/{job_id}")
        assert response.status_code == status and response.json()["error"]


# 4. priority and pause


def test_priorities_order_the_queue_and_pause_holds_it(cluster_factory: Callable[..., Cluster], clip: Path,
                                                      ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    assert request(cluster, "POST", "/api/queue/pause").json() == {"paused": True}
    assert wait_queue_event(ws, "queue:paused")["data"]["paused"] is True
    assert request(cluster, "GET", "/api/queue/stats").json()["paused"] is True

    model: list[tuple[int, int, str]] = []  # (rank, arrival, jobId): the true queue
    submitted: dict[str, str] = {}
    for arrival, (priority, width) in enumerate([("low", 64), ("normal", 96), ("high", 128), ("normal", 160),
                                                 ("high", 192)]):
        response = cluster.resize(video_id, width, width * 3 // 4, priority=priority)
        assert response.status_code == 202
        job_id = response.json()["jobId"]
        submitted[job_id] = priority
        model.append((Priority(priority).rank, arrival, job_id))
        model.sort()
        queued = ws.wait_event("job:queued", job_id)["data"]
        assert queued["priority"] == priority
        assert queued["queuePosition"] == [entry[2] for entry in model].index(job_id) + 1, (priority, width)
    assert [names(ws, job_id) for job_id in submitted] == [["job:queued"]] * 5, "nothing starts while paused"

    assert request(cluster, "POST", "/api/queue/resume").json() == {"paused": False}
    assert wait_queue_event(ws, "queue:resumed")["data"]["paused"] is False
    assert request(cluster, "GET", "/api/queue/stats").json()["paused"] is False
    for job_id in submitted:
        ws.wait_event("job:completed", job_id)
    started = [m["data"]["jobId"] for m in ws.events() if m["event"] == "job:started"]
    assert started == [entry[2] for entry in model]
    assert [submitted[job_id] for job_id in started] == ["high", "high", "normal", "normal", "low"]


# 5. de-duplication


def test_an_identical_job_running_or_delayed_is_returned_not_queued_again(
        cluster_factory: Callable[..., Cluster], clip: Path, long_clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="96x72")),
                                                "--retry-initial-ms", "60000"])
    video_id = cluster.upload(clip)
    long_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    delayed = cluster.resize(video_id, 96, 72)
    assert delayed.status_code == 202
    delayed_id = delayed.json()["jobId"]
    ws.wait_event("job:failed", delayed_id)
    assert cluster.job(delayed_id)["state"] == "delayed"
    again = cluster.resize(video_id, 96, 72)
    assert (again.status_code, again.json()) == (200, {"jobId": delayed_id})

    running_id = cluster.convert(long_id, "webm").json()["jobId"]
    ws.wait_event("job:progress", running_id)
    again = cluster.convert(long_id, "webm")
    assert (again.status_code, again.json()) == (200, {"jobId": running_id})
    assert cluster.job(running_id)["state"] == "running"

    assert names(ws, delayed_id).count("job:queued") == 1 and names(ws, running_id).count("job:queued") == 1
    assert len(request(cluster, "GET", "/api/jobs").json()) == 2
    for job_id in (delayed_id, running_id):  # leave nothing running for the teardown's drain
        assert request(cluster, "DELETE", f"/api/jobs/{job_id}").status_code == 200


# 6. timeouts


def test_a_job_over_its_timeout_is_killed_with_its_process_group_and_retried(
        cluster_factory: Callable[..., Cluster], long_clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    pid_log = tmp_path / "ffmpeg-pids"
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, pid_log=pid_log)),
                                                "--max-job-timeout-s", "10"])
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)

    too_long = cluster.convert(video_id, "webm", timeout=11)
    assert too_long.status_code == 400 and "timeout" in too_long.json()["error"]
    assert request(cluster, "GET", "/api/jobs").json() == []

    response = cluster.convert(video_id, "webm", timeout=0.5)
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert cluster.job(job_id)["timeout"] == 0.5
    failed = ws.wait_event("job:failed", job_id)["data"]
    assert failed["error"] == "timeout" and failed["currentAttempt"] == 0
    first_run = [int(pid) for pid in pid_log.read_text().split("\n")[0].split()]
    assert len(first_run) == 2, "the wrapper and its ffmpeg child"
    wait_until(lambda: all(gone(pid) for pid in first_run), 1.0, "the timed-out ffmpeg group to be killed")

    assert ws.wait_event("job:started", job_id, count=2)["data"]["attempt"] == 1, "a timeout is retried"
    assert request(cluster, "DELETE", f"/api/jobs/{job_id}").status_code == 200  # leave nothing running
    ws.wait_event("job:cancelled", job_id)
    every_run = [int(pid) for pid in pid_log.read_text().split()]
    wait_until(lambda: all(gone(pid) for pid in every_run) and not partials(cluster, video_id), 2.0,
               "every run's ffmpeg and partial output to be gone")


# 7. stalls


def test_a_stopped_executor_is_declared_lost_killed_and_replaced(cluster_factory: Callable[..., Cluster],
                                                                long_clip: Path,
                                                                ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, executors=2)
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    job_id = cluster.convert(video_id, "webm").json()["jobId"]
    ws.wait_event("job:progress", job_id)
    victim = int(cluster.job(job_id)["executor"].removeprefix("executor-"))
    [survivor] = set(cluster.executor_pids()) - {victim}
    orphan_ffmpeg = [p for p in psutil.Process(victim).children(recursive=True) if "ffmpeg" in p.name()]
    assert orphan_ffmpeg, "the victim runs ffmpeg"

    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        stalled = ws.wait_event("job:stalled", job_id, timeout_s=10)
        assert time.monotonic() - stopped_at < 5.0, "stalled within a few seconds (--executor-timeout-s 2)"
        assert "heartbeat" in stalled["data"]["reason"]
        ws.wait_event("job:completed", job_id, timeout_s=60)
        wait_until(lambda: gone(victim), 5, "the primary to kill the stopped executor")
        wait_until(lambda: victim not in cluster.pids("executor") and len(cluster.executor_pids()) == 2, 10,
                   "a replacement executor to join")
    finally:
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    job = cluster.job(job_id)
    assert (job["state"], job["executor"], job["attempts"]) == ("completed", f"executor-{survivor}", 1)
    assert names(ws, job_id).count("job:started") == 2
    assert all(gone(p) for p in orphan_ffmpeg), "the lost executor's ffmpeg died with it"
    assert probe(cluster.data_dir / "storage" / video_id / "converted.webm").video_codec == "vp9"
    assert partials(cluster, video_id) == []


# 11. queue statistics and cleaning


def test_queue_stats_and_cleaning_finished_jobs(cluster_factory: Callable[..., Cluster], clip: Path,
                                                tmp_path: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="96x72")),
                                                "--job-policies", "resize:retries=0"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    completed = [cluster.resize(video_id, w, h).json()["jobId"] for w, h in ((160, 120), (128, 96), (64, 48))]
    dead = cluster.resize(video_id, 96, 72).json()["jobId"]
    for job_id in completed:
        ws.wait_event("job:completed", job_id)
    ws.wait_event("job:permanent-failure", dead)
    request(cluster, "POST", "/api/queue/pause")
    queued = cluster.convert(video_id, "webm").json()["jobId"]

    stats = request(cluster, "GET", "/api/queue/stats").json()
    assert stats["paused"] is True
    assert stats["byState"] == {"queued": 1, "running": 0, "delayed": 0, "completed": 3, "dead": 1, "cancelled": 0}
    assert stats["byType"] == {"resize": {"completed": 3, "dead": 1}, "convert": {"queued": 1}}
    per_minute = stats["jobsPerMinute"]
    assert len(per_minute) == 60 and per_minute[-1] == 3 and sum(per_minute) == 3
    assert stats["waitMs"]["count"] == 4 and 0 <= stats["waitMs"]["mean"] <= stats["waitMs"]["p95"]
    assert stats["runMs"]["count"] == 3 and 0 < stats["runMs"]["mean"] <= stats["runMs"]["p95"]
    assert 0 <= stats["successRate"] <= 1 and stats["successRate"] == 0.75

    for body in ({"olderThan": -1}, {"olderThan": "soon"}):
        response = request(cluster, "POST", "/api/queue/clean", json=body)
        assert response.status_code == 400 and response.json()["error"]
    assert len(request(cluster, "GET", "/api/jobs").json()) == 5, "a refused clean removes nothing"
    response = request(cluster, "POST", "/api/queue/clean", json={"olderThan": 0})
    assert response.status_code == 200 and response.json() == {"removed": 4}
    for job_id in [*completed, dead]:
        assert request(cluster, "GET", f"/api/jobs/{job_id}").status_code == 404
    assert cluster.job(queued)["state"] == "queued"
    assert request(cluster, "GET", "/api/queue/dead-letter").json() == []
    assert request(cluster, "GET", "/api/queue/stats").json()["byState"]["completed"] == 0


def test_a_dead_job_can_be_discarded_from_the_dead_letter_list(
        cluster_factory: Callable[..., Cluster], clip: Path, tmp_path: Path,
        ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--ffmpeg", str(ffmpeg_wrapper(tmp_path, crash_on="")),
                                                "--job-policies", "resize:retries=0"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    job_id = cluster.resize(video_id, 160, 120).json()["jobId"]
    ws.wait_event("job:permanent-failure", job_id)
    with cluster.client() as client:
        client.post("/api/queue/pause")
        queued = cluster.resize(video_id, 320, 240).json()["jobId"]
        assert client.delete(f"/api/queue/dead-letter/{queued}").status_code == 409
        assert client.delete(f"/api/queue/dead-letter/{job_id}").json() == {"jobId": job_id, "discarded": True}
        assert client.get("/api/queue/dead-letter").json() == []
        assert client.get(f"/api/jobs/{job_id}").status_code == 404
