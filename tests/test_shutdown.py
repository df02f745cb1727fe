"""Graceful shutdown: SIGTERM drains the running jobs within the grace period, and loses none after it (item 9)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.harness import Cluster, EventClient, wait_until
from tests.test_job_control import events_after, partials


def shutting_down(cluster: Cluster) -> bool:
    try:
        return cluster.health()["status"] == "shutting-down"
    except httpx.HTTPError:
        return False


def test_sigterm_lets_the_running_job_finish_and_refuses_new_ones(cluster_factory: Callable[..., Cluster],
                                                                 clip: Path, long_clip: Path,
                                                                 ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(extra=["--shutdown-grace-s", "60"])
    long_id = cluster.upload(long_clip)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    job_id = cluster.convert(long_id, "webm").json()["jobId"]
    ws.wait_event("job:progress", job_id)

    cluster.send_signal(signal.SIGTERM)
    wait_until(lambda: shutting_down(cluster), 5, "health to say shutting-down")
    refused = cluster.resize(video_id, 160, 120)
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    completed = ws.wait_event("job:completed", job_id, timeout_s=60)
    assert completed["data"]["attempts"] == 1

    assert cluster.process is not None
    assert cluster.process.wait(30) == 0
    assert cluster.leftovers() == []
    assert list((cluster.data_dir / "run").iterdir()) == [], "no socket or lock file is left"
    assert [m["event"] for m in ws.events(job_id)].count("job:started") == 1
    assert (cluster.data_dir / "storage" / long_id / "converted.webm").is_file()
    assert partials(cluster, long_id) == []


def test_a_job_still_running_after_the_grace_period_runs_again_at_the_next_start(
        cluster_factory: Callable[..., Cluster], long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(extra=["--shutdown-grace-s", "0.5"])
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    job_id = cluster.convert(video_id, "webm").json()["jobId"]
    progress = ws.wait_event("job:progress", job_id)

    cluster.send_signal(signal.SIGTERM)
    assert cluster.process is not None
    assert cluster.process.wait(30) == 0
    assert cluster.leftovers() == [], "the interrupted ffmpeg went with its executor"
    assert list((cluster.data_dir / "run").iterdir()) == []
    assert partials(cluster, video_id) == []
    assert not set(events_after(ws, job_id, progress)) & {"job:completed", "job:failed", "job:permanent-failure"}
    last_seq = max(m["seq"] for m in ws.events())

    cluster.start()  # same data dir and port
    again = ws_factory(cluster, since=last_seq)  # what happened since, even before we connected
    completed = again.wait_event("job:completed", job_id, timeout_s=60)
    # The interrupted attempt ends one of two ways, both right: its executor stops before the primary and the
    # run is stalled and queued again then, or it is still running in the store and queued at the next start.
    # Its events reach the old client or the replay, depending on when the old connection closed; and progress
    # of the interrupted attempt may come last. So: the job's whole story after the progress awaited above.
    story = {m["seq"]: m for m in ws.events(job_id) + again.events(job_id) if m["seq"] > progress["seq"]}
    after = [story[seq] for seq in sorted(story) if story[seq]["event"] != "job:progress"]
    names = [m["event"] for m in after]
    assert names in (["job:queued", "job:started", "job:completed"],
                     ["job:stalled", "job:queued", "job:started", "job:completed"]), names
    assert all(m["data"]["attempt"] == 0 for m in after if m["event"] in ("job:stalled", "job:queued", "job:started")), \
        "an interrupted attempt is not a failed one"
    assert completed["data"]["attempts"] == 1
    assert cluster.job(job_id)["state"] == "completed"
    assert (cluster.data_dir / "storage" / video_id / "converted.webm").is_file()
