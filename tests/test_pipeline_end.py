"""How a pipeline ends for good: cancelled by its owner or an administrator (its running stage's ffmpeg
killed, nothing queued after it), failed for good once its dead job is removed, and removed itself by
retention once finished, in batches. Real cluster, real ffmpeg."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tests.harness import Cluster, EventClient, wait_until
from tests.test_pipelines import kill_and_restart, log_in_bob, pipeline_event, show, start, store_rows

RESIZE = {"type": "resize", "width": 160, "height": 120}
DAY_MS = 86_400_000


def hide_original(cluster: Cluster, video_id: str) -> Callable[[], None]:
    """The video's source goes away (its jobs fail for good); the answer puts it back."""
    [original] = (cluster.data_dir / "storage" / video_id).glob("original.*")
    hidden = original.with_name("hidden")
    original.rename(hidden)
    return lambda: hidden.rename(original)


def test_cancelling_a_pipeline_kills_its_running_stage_and_queues_nothing_after(
        cluster_factory: Callable[..., Cluster], long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    bob = log_in_bob(cluster)
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": 320, "height": 240}, {"type": "extract-audio"}])
    first = show(cluster, pipeline_id)["stages"][0]["jobId"]
    ws.wait_event("job:started", first)
    wait_until(cluster.ffmpeg_processes, 30, "the stage's ffmpeg to run")

    with cluster.client(bob) as client:
        assert client.delete(f"/api/pipelines/{pipeline_id}").status_code == 404, "not bob's"
    with cluster.client() as client:
        assert client.delete("/api/pipelines/no-such").status_code == 404
        response = client.delete(f"/api/pipelines/{pipeline_id}")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["state"] == "cancelled"
    assert [s["state"] for s in cancelled["stages"]] == ["cancelled", "pending"]
    assert pipeline_event(ws, "pipeline:cancelled", pipeline_id)["data"]["jobId"] == first
    ws.wait_event("job:cancelled", first)
    wait_until(lambda: not cluster.ffmpeg_processes(), 30, "the stage's ffmpeg to be killed")
    assert cluster.job(first)["state"] == "cancelled"
    with cluster.client() as client:
        again = client.delete(f"/api/pipelines/{pipeline_id}")
    assert again.status_code == 409 and "has ended" in again.json()["error"], again.text

    seqs = store_rows(cluster, "SELECT event, seq FROM events WHERE event IN ('job:cancelled', 'pipeline:cancelled') "
                               "ORDER BY seq")
    assert [e for e, _ in seqs] == ["job:cancelled", "pipeline:cancelled"]
    assert seqs[1][1] == seqs[0][1] + 1, "the job's end and the pipeline's are stored together"
    kill_and_restart(cluster)
    assert show(cluster, pipeline_id)["state"] == "cancelled"
    jobs = store_rows(cluster, "SELECT id, state FROM jobs WHERE video_id = ?", video_id)
    assert jobs == [(first, "cancelled")], "no later stage was queued, before or after the restart"
    assert not [m for m in ws.events() if m["event"] == "pipeline:stage-completed"]


def test_a_pipeline_waiting_for_review_or_failed_is_cancelled_and_never_resumes(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--max-retries", "0"])
    bob = log_in_bob(cluster)
    ws = ws_factory(cluster)
    bobs_video = cluster.upload(clip, token=bob)
    gated = start(cluster, bobs_video, [{"type": "extract-audio", "review": True}, RESIZE], token=bob)
    pipeline_event(ws, "pipeline:review-needed", gated)
    with cluster.client() as client:  # an administrator may stop anyone's
        response = client.delete(f"/api/pipelines/{gated}")
        assert response.status_code == 200, response.text
        assert [s["state"] for s in response.json()["stages"]] == ["completed", "pending"]
        assert client.post(f"/api/pipelines/{gated}/approve").status_code == 409
    with cluster.client(bob) as client:
        assert client.delete(f"/api/pipelines/{gated}").status_code == 409
    assert pipeline_event(ws, "pipeline:cancelled", gated)["data"]["stage"] == 0

    video_id = cluster.upload(clip)
    restore = hide_original(cluster, video_id)
    failing = start(cluster, video_id, [RESIZE, {"type": "extract-audio"}])
    dead = pipeline_event(ws, "pipeline:failed", failing)["data"]["jobId"]
    with cluster.client() as client:
        response = client.delete(f"/api/pipelines/{failing}")
        assert response.status_code == 200, response.text
        assert [s["state"] for s in response.json()["stages"]] == ["dead", "pending"]
        restore()
        assert client.post(f"/api/jobs/{dead}/retry").status_code == 202, "the job may run again, alone"
    ws.wait_event("job:completed", dead, timeout_s=60)
    assert show(cluster, failing)["state"] == "cancelled"
    assert not [m for m in ws.events(name="pipeline:resumed")]
    assert store_rows(cluster, "SELECT COUNT(*) FROM jobs WHERE video_id = ?", video_id)[0][0] == 1


def test_a_failed_pipeline_whose_dead_job_is_removed_has_failed_for_good(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--max-retries", "0"])
    ws = ws_factory(cluster)
    video_id = cluster.upload(clip)
    restore = hide_original(cluster, video_id)
    pipelines = [start(cluster, video_id, [{"type": "resize", "width": 32 * (n + 2), "height": 32}, RESIZE])
                 for n in range(3)]
    discarded, cleaned, crashed = pipelines
    dead = {p: pipeline_event(ws, "pipeline:failed", p)["data"]["jobId"] for p in pipelines}
    restore()

    with cluster.client() as client:
        assert client.delete(f"/api/queue/dead-letter/{dead[discarded]}").status_code == 200
        shown = client.get(f"/api/pipelines/{discarded}").json()
        assert (shown["state"], [s["state"] for s in shown["stages"]]) == ("failed", ["removed", "pending"])
        assert shown["stages"][0]["jobId"] == dead[discarded], "which job it was"
        assert client.post(f"/api/jobs/{dead[discarded]}/retry").status_code == 404
        assert client.delete(f"/api/pipelines/{discarded}").status_code == 409, "it has ended"
        assert show(cluster, cleaned)["stages"][0]["state"] == "dead", "another's dead job is still there"

    assert cluster.stop() == 0
    with closing(sqlite3.connect(cluster.data_dir / "cluster.db")) as db, db:  # removed, its step not stored
        db.execute("DELETE FROM jobs WHERE id = ?", (dead[crashed],))
    cluster.start()
    assert show(cluster, crashed)["stages"][0]["state"] == "removed", "repaired at the start"
    with cluster.client() as client:
        assert client.post("/api/queue/clean", json={"olderThan": 0}).status_code == 200  # retention's kind of removal
        for pipeline_id in pipelines:
            shown = client.get(f"/api/pipelines/{pipeline_id}").json()
            assert (shown["state"], shown["stages"][0]["state"]) == ("failed", "removed"), pipeline_id
            assert client.delete(f"/api/pipelines/{pipeline_id}").status_code == 409
    cluster.stop()
    cluster.start()
    assert all(show(cluster, p)["stages"][0]["state"] == "removed" for p in pipelines)
    with cluster.client() as client:
        assert all(client.delete(f"/api/pipelines/{p}").status_code == 409 for p in pipelines), \
            "not taken for live at the next start"


def test_finished_pipelines_are_removed_by_age_in_batches(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    """With the jobs' settings (defaults: completed 7 days, dead and cancelled 30); aged by hand in the store."""
    cluster = cluster_factory(workers=1, extra=["--max-retries", "0"])
    ws = ws_factory(cluster)
    video_id = cluster.upload(clip)
    completed = start(cluster, video_id, [RESIZE])
    recent = start(cluster, video_id, [{"type": "resize", "width": 64, "height": 48}])
    review = start(cluster, video_id, [{"type": "extract-audio", "review": True}, {"type": "hls"}])
    pipeline_event(ws, "pipeline:completed", completed)
    pipeline_event(ws, "pipeline:completed", recent)
    pipeline_event(ws, "pipeline:review-needed", review)
    cancelled = start(cluster, video_id, [{"type": "resize", "width": 96, "height": 72, "review": True}, RESIZE])
    pipeline_event(ws, "pipeline:review-needed", cancelled)
    with cluster.client() as client:
        assert client.delete(f"/api/pipelines/{cancelled}").status_code == 200
    restore = hide_original(cluster, video_id)
    kept_dead = start(cluster, video_id, [{"type": "resize", "width": 128, "height": 96}])
    gone_dead = start(cluster, video_id, [{"type": "resize", "width": 192, "height": 144}])
    discarded = start(cluster, video_id, [{"type": "resize", "width": 256, "height": 192}])
    dead = {p: pipeline_event(ws, "pipeline:failed", p)["data"]["jobId"] for p in (kept_dead, gone_dead, discarded)}
    restore()
    with cluster.client() as client:
        assert client.delete(f"/api/queue/dead-letter/{dead[discarded]}").status_code == 200
    ws.close()
    assert cluster.stop() == 0

    now_ms = time.time() * 1000
    aged = [completed, review, cancelled, kept_dead, gone_dead, discarded]
    synthetic = [f"aged{n:04d}" for n in range(450)]  # more than two of retention's batches
    with closing(sqlite3.connect(cluster.data_dir / "cluster.db")) as db, db:
        owner = db.execute("SELECT owner FROM pipelines WHERE id = ?", (completed,)).fetchone()[0]
        db.executemany("UPDATE pipelines SET updated_at = ? WHERE id = ?", [(now_ms - 31 * DAY_MS, p) for p in aged])
        db.execute("UPDATE jobs SET created_at = ?, failed_at = ? WHERE id = ?",  # the jobs' retention removes it
                   (now_ms - 32 * DAY_MS, now_ms - 31 * DAY_MS, dead[gone_dead]))
        db.executemany("INSERT INTO pipelines (id, video_id, owner, name, state, current, created_at, updated_at) "
                       "VALUES (?, ?, ?, NULL, 'completed', 0, ?, ?)",
                       [(p, video_id, owner, now_ms - 9 * DAY_MS, now_ms - 8 * DAY_MS) for p in synthetic])
        db.executemany("INSERT INTO pipeline_stages (pipeline_id, idx, type, params, options, review, job_id, state) "
                       "VALUES (?, 0, 'resize', '{}', '{}', 0, NULL, 'completed')", [(p,) for p in synthetic])
    cluster.start()  # retention sweeps at the start: the jobs, then the pipelines

    with cluster.client() as client:
        wait_until(lambda: client.get(f"/api/pipelines/{completed}").status_code == 404, 30,
                   "retention to remove the aged pipelines")
        for gone in (completed, cancelled, gone_dead, discarded):
            assert client.get(f"/api/pipelines/{gone}").status_code == 404, gone
    left = {row[0] for row in store_rows(cluster, "SELECT id FROM pipelines")}
    assert left == {recent, review, kept_dead}, "live ones, a failed one whose dead job is kept, the recent one"
    assert store_rows(cluster, "SELECT id FROM jobs WHERE id = ?", dead[gone_dead]) == []
    stages = {row[0] for row in store_rows(cluster, "SELECT DISTINCT pipeline_id FROM pipeline_stages")}
    assert stages == left, "their stages with them"
    swept = [json.loads(line) for line in cluster.log_path.read_text().splitlines()
             if "finished pipelines removed by retention" in line]
    assert [entry["removed"] for entry in swept] == [len(synthetic) + 4], "450 aged ones and the four above"

    ws = EventClient(cluster.ws_url, cluster.token)
    try:
        with cluster.client() as client:
            assert client.post(f"/api/jobs/{dead[kept_dead]}/retry").status_code == 202
        pipeline_event(ws, "pipeline:completed", kept_dead)  # still live: its retry resumed it
    finally:
        ws.close()


def test_cancelling_one_of_two_pipelines_waiting_on_the_same_job_leaves_the_job_to_the_other(
        cluster_factory: Callable[..., Cluster], long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    resize = {"type": "resize", "width": 320, "height": 240}
    leaving = start(cluster, video_id, [resize, {"type": "extract-audio"}])
    staying = start(cluster, video_id, [resize, RESIZE])
    shared = show(cluster, leaving)["stages"][0]["jobId"]
    assert show(cluster, staying)["stages"][0]["jobId"] == shared
    ws.wait_event("job:started", shared)
    with cluster.client() as client:
        response = client.delete(f"/api/pipelines/{leaving}")
    assert response.status_code == 200, response.text
    pipeline_event(ws, "pipeline:completed", staying, timeout_s=90)
    assert cluster.job(shared)["state"] == "completed", "the job went on for the other pipeline"
    assert show(cluster, leaving)["state"] == "cancelled"
    types = [t for (t,) in store_rows(cluster, "SELECT type FROM jobs WHERE video_id = ? ORDER BY created_at", video_id)]
    assert types == ["resize", "resize"], "only the other pipeline's next stage was queued"
