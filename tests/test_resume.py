"""Resumable events: a client that comes back gets what it missed, in order, once (issue 3, item 10)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Cluster, EventClient


def seqs(client: EventClient) -> list[int]:
    return [m["seq"] for m in client.events()]


def resumed(client: EventClient) -> dict[str, Any]:
    messages = client.wait_for(lambda ms: any(m.get("type") == "resumed" for m in ms), what="resumed")
    return next(m for m in messages if m.get("type") == "resumed")


def run_jobs(cluster: Cluster, video_id: str, count: int, first_width: int = 64) -> list[str]:
    with cluster.client() as client:
        sizes = [(first_width + 2 * (i % 1000), 48 + 2 * (i // 1000)) for i in range(count)]
        return [client.put("/api/video/resize", json={"videoId": video_id, "width": w, "height": h}).json()["jobId"]
                for w, h in sizes]


def test_a_client_resuming_from_its_last_seq_misses_nothing(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(executors=1)
    video_id = cluster.upload(clip)
    watcher = ws_factory(cluster)  # sees everything, as the reference
    first = ws_factory(cluster)
    early = run_jobs(cluster, video_id, 2)
    first.wait_event("job:completed", early[-1])
    last_seen = seqs(first)[-1]
    first.close()

    missed = run_jobs(cluster, video_id, 3, first_width=200)  # while nobody listens on `first`
    watcher.wait_event("job:completed", missed[-1])
    again = ws_factory(cluster)  # perhaps on the other web worker
    again.send({"type": "resume", "since": last_seen})
    answer = resumed(again)
    live = run_jobs(cluster, video_id, 2, first_width=400)
    again.wait_event("job:completed", live[-1])
    watcher.wait_event("job:completed", live[-1])

    expected = [s for s in seqs(watcher) if s > last_seen]
    assert seqs(again) == expected, "every event after last_seen, in order, once"
    assert answer["replayed"] == len([s for s in expected if s <= answer["lastSeq"]])


def test_resume_from_zero_replays_the_stored_history(cluster: Cluster, clip: Path,
                                                     ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(clip)
    watcher = ws_factory(cluster)
    job_id = run_jobs(cluster, video_id, 1)[0]
    watcher.wait_event("job:completed", job_id)
    late = ws_factory(cluster)
    late.send({"type": "resume", "since": 0})
    resumed(late)
    assert seqs(late) == seqs(watcher)
    assert [m["event"] for m in late.events(job_id)][-1] == "job:completed"


def test_bad_resume_requests(cluster: Cluster, ws_factory: Callable[..., EventClient]) -> None:
    client = ws_factory(cluster)
    for since in (-1, "7", None):
        client.send({"type": "resume", "since": since})
    client.wait_for(lambda ms: len([m for m in ms if m.get("type") == "error"]) == 3, what="three errors")


def welcome_worker(client: EventClient) -> int:
    messages = client.wait_for(lambda ms: any(m.get("type") == "welcome" for m in ms), what="welcome")
    return next(m["worker"] for m in messages if m.get("type") == "welcome")


def test_events_dropped_by_pub_to_a_stalled_worker_are_fetched(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    # the stopped worker must not be declared dead meanwhile: that is another test
    cluster = cluster_factory(workers=2, executors=0, extra=["--pub-hwm", "2", "--worker-timeout-s", "300",
                                                                     "--job-rate-per-min", "0",
                                                                     "--max-queued-jobs-per-user", "0"])
    video_id = cluster.upload(clip)
    workers: dict[int, EventClient] = {}
    for _ in range(60):  # the kernel decides which worker accepts: connect until both have a client
        client = ws_factory(cluster)
        workers.setdefault(welcome_worker(client), client)
        if len(workers) == 2:
            break
    assert len(workers) == 2, "both workers accepted a connection"
    (slow_pid, slow), (_, fast) = workers.items()
    os.kill(slow_pid, signal.SIGSTOP)
    try:
        job_ids = run_jobs(cluster, video_id, 4000, first_width=16)  # answered by the other worker
        fast.wait_event("job:queued", job_ids[-1])
    finally:
        os.kill(slow_pid, signal.SIGCONT)
    welcome = next(m for m in slow.messages if m.get("type") == "welcome")
    got, client = [], slow
    for _ in range(10):
        try:
            client.wait_event("job:queued", job_ids[-1], timeout_s=60)
            got += seqs(client)
            break
        except TimeoutError:
            # The worker's catch-up is a burst; a client that cannot read it fast enough is dropped (1013, then
            # cut off, losing what it had not read) and resumes from the last event it got, as every client may;
            # a resumed client may be dropped in turn. What each got, in turn: each event once, in order.
            assert client.closed.is_set(), "the client got everything, or was dropped to resume"
            got += seqs(client)
            client = ws_factory(cluster, since=max(got, default=welcome["lastSeq"]))
    assert got == seqs(fast)
    assert "events dropped by the PUB socket were fetched" in cluster.log_path.read_text()


def test_welcome_tells_a_quiet_client_where_to_resume_from(cluster: Cluster, clip: Path,
                                                           ws_factory: Callable[[str], EventClient]) -> None:
    video_id = cluster.upload(clip)
    watcher = ws_factory(cluster)
    job_id = run_jobs(cluster, video_id, 1)[0]
    watcher.wait_event("job:completed", job_id)
    late = ws_factory(cluster)
    welcome = late.wait_for(lambda ms: any(m.get("type") == "welcome" for m in ms), what="welcome")[0]
    assert welcome["lastSeq"] == seqs(watcher)[-1] or welcome["lastSeq"] == 0  # 0: that worker saw no event yet


def test_a_resume_in_the_url_replays_what_was_missed_and_a_bad_one_is_an_error(
        cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(clip)
    watcher = ws_factory(cluster)
    job_id = run_jobs(cluster, video_id, 1)[0]
    watcher.wait_event("job:completed", job_id)
    late = ws_factory(cluster, since=0)  # no first message to race a timer: the URL says it
    assert resumed(late)["since"] == 0
    assert seqs(late) == seqs(watcher)
    bad = EventClient(cluster.ws_url + "?since=-1", cluster.token)
    try:
        error = bad.wait_for(lambda ms: any(m.get("type") == "error" for m in ms), what="an error")
        assert any("since must be a seq number" in m.get("error", "") for m in error)
        assert not bad.closed.is_set(), "a bad since is an error message, not a dropped connection"
    finally:
        bad.close()
