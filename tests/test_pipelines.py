"""Pipelines end to end (issue 13): stages in turn with real ffmpeg, a review gate, a failing stage and its
retry, a cancelled stage, a primary killed mid-pipeline, the start-up repair, an upload's named pipeline."""

from __future__ import annotations

import itertools
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import ROOT, Cluster, EventClient, free_port, generate_clip, wait_until
from tests.test_webhooks import ALLOW_PRIVATE, Receiver, create_webhook, receivers  # noqa: F401 - a fixture

Message = dict[str, Any]
PIPELINE_EVENTS = ("pipeline:started", "pipeline:stage-completed", "pipeline:review-needed", "pipeline:completed",
                   "pipeline:failed", "pipeline:resumed", "pipeline:cancelled")


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clip(tmp_path_factory.mktemp("clips") / "silent.mp4", audio=False)


def start(cluster: Cluster, video_id: str, stages: list[dict[str, Any]], token: str | None = None) -> str:
    with cluster.client(token) as client:
        response = client.post("/api/pipelines", json={"videoId": video_id, "stages": stages})
    assert response.status_code == 202, response.text
    return response.json()["pipelineId"]


def log_in_bob(cluster: Cluster) -> str:
    """A second user, not the admin who owns the videos these tests upload: bob's token."""
    cluster.add_user("bob", "bob-password-1")
    return cluster.login("bob", "bob-password-1")


def show(cluster: Cluster, pipeline_id: str) -> dict[str, Any]:
    with cluster.client() as client:
        response = client.get(f"/api/pipelines/{pipeline_id}")
    assert response.status_code == 200, response.text
    return response.json()


def pipeline_event(ws: EventClient, name: str, pipeline_id: str, timeout_s: float = 60.0) -> Message:
    def seen(messages: list[Message]) -> bool:
        return any(m.get("event") == name and m["data"].get("pipelineId") == pipeline_id for m in messages)

    ws.wait_for(seen, timeout_s, f"{name} for {pipeline_id}")
    return next(m for m in ws.events(name=name) if m["data"]["pipelineId"] == pipeline_id)


def store_rows(cluster: Cluster, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(cluster.data_dir / "cluster.db")) as db:
        return db.execute(query, args).fetchall()


def test_three_stages_with_a_review_gate_run_in_turn_and_announce_each_step(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    bob = log_in_bob(cluster)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    ws.send({"type": "subscribe-video", "videoId": video_id})  # only the video's room: what its card hears
    ws.wait_for(lambda ms: any(m.get("type") == "subscribed" for m in ms), 10, "the room joined")
    stages = [{"type": "resize", "width": 160, "height": 120}, {"type": "convert", "format": "webm", "review": True},
              {"type": "extract-audio"}]
    pipeline_id = start(cluster, video_id, stages)

    review = pipeline_event(ws, "pipeline:review-needed", pipeline_id)["data"]
    assert (review["stage"], review["type"], review["videoId"]) == (1, "convert", video_id)
    waiting = show(cluster, pipeline_id)
    assert waiting["state"] == "review"
    assert [s["state"] for s in waiting["stages"]] == ["completed", "completed", "pending"]
    assert waiting["stages"][2]["jobId"] is None, "nothing queued past the gate"
    with cluster.client(bob) as client:
        assert client.post(f"/api/pipelines/{pipeline_id}/approve").status_code == 404, "not bob's"
        assert client.get(f"/api/pipelines/{pipeline_id}").status_code == 404
    with cluster.client() as client:
        assert client.post(f"/api/pipelines/{pipeline_id}/approve").status_code == 200
        again = client.post(f"/api/pipelines/{pipeline_id}/approve")
    assert again.status_code == 409, again.text

    done = pipeline_event(ws, "pipeline:completed", pipeline_id)["data"]
    finished = show(cluster, pipeline_id)
    assert finished["state"] == "completed"
    job_ids = [s["jobId"] for s in finished["stages"]]
    assert done["jobId"] == job_ids[2]
    assert [cluster.job(j)["type"] for j in job_ids] == ["resize", "convert", "extract-audio"]
    assert all(cluster.job(j)["state"] == "completed" for j in job_ids)

    steps = [(m["event"], m["data"].get("stage")) for m in ws.events() if m["event"] in PIPELINE_EVENTS]
    assert steps == [("pipeline:started", 0), ("pipeline:stage-completed", 0), ("pipeline:stage-completed", 1),
                     ("pipeline:review-needed", 1), ("pipeline:stage-completed", 2), ("pipeline:completed", 2)]
    order = [(m["event"], m["data"]["jobId"]) for m in ws.events()]
    for before, after in itertools.pairwise(job_ids):
        assert order.index(("job:completed", before)) < order.index(("pipeline:stage-completed", before)) \
            < order.index(("job:queued", after)), "each stage is queued once the one before completed"
    seqs = [m["seq"] for m in ws.events()]
    assert seqs == sorted(seqs)
    replay = ws_factory(cluster, since=0)  # stored with their seqs: a resume replays them in order
    pipeline_event(replay, "pipeline:completed", pipeline_id)
    assert [(m["event"], m["data"].get("stage")) for m in replay.events() if m["event"] in PIPELINE_EVENTS] == steps

    with cluster.client() as client:
        listed = client.get("/api/pipelines", params={"videoId": video_id}).json()
        assert [p["pipelineId"] for p in listed] == [pipeline_id]
        assert client.get("/api/pipelines", params={"videoId": video_id}, headers={
            "Authorization": f"Bearer {bob}"}).json() == [], "bob lists only his own"
        assert client.post("/api/queue/clean", json={"olderThan": 0}).status_code == 200
        assert client.get(f"/api/jobs/{job_ids[0]}").status_code == 404, "retention removed the jobs"
    kept = show(cluster, pipeline_id)
    assert kept["state"] == "completed" and [s["state"] for s in kept["stages"]] == ["completed"] * 3


def test_every_stage_is_checked_when_the_pipeline_is_asked_for(
        cluster_factory: Callable[..., Cluster], clip: Path, silent_clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    bob = log_in_bob(cluster)
    video_id = cluster.upload(clip)
    silent_id = cluster.upload(silent_clip)
    resize = {"type": "resize", "width": 160, "height": 120}
    refused = [
        ({"videoId": video_id, "stages": [resize, {"type": "convert", "format": "mp4"}]}, 400,
         "stage 1 (convert): the video is already mp4"),
        ({"videoId": video_id, "stages": [resize, {"type": "resize", "width": 161, "height": 120}]}, 400,
         "stage 1 (resize): width must be even"),
        ({"videoId": silent_id, "stages": [resize, {"type": "extract-audio"}]}, 400,
         "stage 1 (extract-audio): the video has no audio to extract"),
        ({"videoId": video_id, "stages": [{"type": "telepathy"}]}, 400, "stage 0 (telepathy): unknown job type"),
        ({"videoId": video_id, "stages": [resize] * 11}, 400, "at most 10 stages"),
        ({"videoId": video_id, "stages": []}, 400, "non-empty list"),
        ({"videoId": video_id, "stages": [{**resize, "review": "yes"}]}, 400, "stage 0: review must be true or false"),
        ({"videoId": video_id, "stages": [{"width": 2}]}, 400, "stage 0: type is required"),
        ({"videoId": video_id, "stages": [resize, {"type": "x" * 10_000}]}, 400, "stage 1: type must be the name"),
        ({"videoId": video_id, "stages": ["resize"]}, 400, "stage 0: must be an object"),
        ({"videoId": video_id, "stages": [{**resize, "videoId": silent_id}]}, 400, "stage 0: videoId belongs"),
        ({"stages": [resize]}, 400, "videoId is required"),
        ({"videoId": "nosuchvideo", "stages": [resize]}, 404, "video nosuchvideo not found"),
    ]
    with cluster.client() as client:
        for body, status, message in refused:
            response = client.post("/api/pipelines", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"], (body, response.text)
        assert client.post("/api/pipelines", content=b"[1,2]", headers={"content-type": "application/json"}).status_code == 400
        assert client.get("/api/pipelines/x%2e%2e").status_code == 404
        assert client.get("/api/pipelines", params={"limit": "0"}).status_code == 400
        assert client.get("/api/pipelines", params={"before": "nonsense"}).status_code == 400
    bobs = cluster.upload(clip, token=bob)
    with cluster.client(bob) as client:
        response = client.post("/api/pipelines", json={"videoId": video_id, "stages": [resize]})
        assert response.status_code == 404, "another user's video is one that does not exist"
        response = client.post("/api/pipelines", json={"videoId": bobs, "stages": [resize, {**resize, "priority": "high"}]})
        assert response.status_code == 403 and "stage 1 (resize): priority high" in response.json()["error"]
        assert client.get("/api/pipelines/nosuchpipeline").status_code == 404
    assert store_rows(cluster, "SELECT COUNT(*) FROM pipelines")[0][0] == 0, "nothing refused was stored"
    assert store_rows(cluster, "SELECT COUNT(*) FROM jobs")[0][0] == 0

    made = [start(cluster, video_id, [{"type": "resize", "width": 16 * (i + 2), "height": 16}]) for i in range(3)]
    twin = start(cluster, video_id, [{"type": "resize", "width": 32, "height": 16}, {"type": "extract-audio"}])
    assert show(cluster, twin)["stages"][0]["jobId"] == show(cluster, made[0])["stages"][0]["jobId"], \
        "an identical stage waits on the job already active"
    with cluster.client() as client:
        first = client.get("/api/pipelines", params={"limit": 3})
        assert [p["pipelineId"] for p in first.json()] == [twin, *made[:0:-1]]
        second = client.get("/api/pipelines", params={"limit": 3, "before": first.headers["X-Next-Cursor"]})
        assert [p["pipelineId"] for p in second.json()] == [made[0]] and "X-Next-Cursor" not in second.headers


def test_a_dead_stage_fails_the_pipeline_and_its_retry_resumes_it(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--max-retries", "0"])
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    [original] = (cluster.data_dir / "storage" / video_id).glob("original.*")
    hidden = original.with_name("hidden")
    original.rename(hidden)  # the first stage cannot read its source: it fails for good
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": 160, "height": 120},
                                            {"type": "extract-audio"}])

    failed = pipeline_event(ws, "pipeline:failed", pipeline_id)["data"]
    assert (failed["stage"], failed["type"]) == (0, "resize")
    broken = failed["jobId"]
    assert cluster.job(broken)["state"] == "dead"
    shown = show(cluster, pipeline_id)
    assert shown["state"] == "failed"
    assert [s["state"] for s in shown["stages"]] == ["dead", "pending"]
    with cluster.client() as client:
        assert client.post(f"/api/pipelines/{pipeline_id}/approve").status_code == 409

    hidden.rename(original)
    with cluster.client() as client:
        assert client.post(f"/api/jobs/{broken}/retry").status_code == 202
    pipeline_event(ws, "pipeline:resumed", pipeline_id)
    pipeline_event(ws, "pipeline:completed", pipeline_id)
    finished = show(cluster, pipeline_id)
    assert finished["state"] == "completed"
    assert finished["stages"][0]["jobId"] == broken, "the retried job is the stage's job"
    assert [cluster.job(s["jobId"])["state"] for s in finished["stages"]] == ["completed", "completed"]


def test_cancelling_a_stage_cancels_the_pipeline_and_deleting_the_video_removes_it(
        cluster_factory: Callable[..., Cluster], long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": 320, "height": 240},
                                            {"type": "extract-audio"}])
    first = show(cluster, pipeline_id)["stages"][0]["jobId"]
    ws.wait_event("job:started", first)
    with cluster.client() as client:
        assert client.delete(f"/api/jobs/{first}").status_code == 200
    cancelled = pipeline_event(ws, "pipeline:cancelled", pipeline_id)["data"]
    assert cancelled["jobId"] == first
    shown = show(cluster, pipeline_id)
    assert shown["state"] == "cancelled" and [s["state"] for s in shown["stages"]] == ["cancelled", "pending"]
    with cluster.client() as client:
        assert client.post(f"/api/jobs/{first}/retry").status_code == 202, "the job may run again, alone"
        ws.wait_event("job:completed", first, timeout_s=60)
        assert show(cluster, pipeline_id)["state"] == "cancelled", "a cancelled pipeline stays so"
        waiting = start(cluster, video_id, [{"type": "extract-audio", "review": True}, {"type": "hls"}])
        pipeline_event(ws, "pipeline:review-needed", waiting)
        assert client.delete(f"/api/videos/{video_id}").status_code == 200
        for gone in (pipeline_id, waiting):
            assert client.get(f"/api/pipelines/{gone}").status_code == 404
            assert client.post(f"/api/pipelines/{gone}/approve").status_code == 404
    assert store_rows(cluster, "SELECT COUNT(*) FROM pipeline_stages")[0][0] == 0


def assert_each_stage_ran_once(cluster: Cluster, video_id: str, pipeline_id: str, types: list[str]) -> None:
    shown = show(cluster, pipeline_id)
    assert shown["state"] == "completed"
    jobs = store_rows(cluster, "SELECT id, type, state FROM jobs WHERE video_id = ? ORDER BY created_at", video_id)
    assert [(t, s) for _, t, s in jobs] == [(t, "completed") for t in types], "each stage's job exactly once"
    assert [s["jobId"] for s in shown["stages"]] == [j for j, _, _ in jobs]
    steps = store_rows(cluster, "SELECT json_extract(data, '$.stage'), COUNT(*) FROM events WHERE event = "
                                "'pipeline:stage-completed' AND json_extract(data, '$.pipelineId') = ? GROUP BY 1",
                       pipeline_id)
    assert steps == [(i, 1) for i in range(len(types))], "each stage completed once, none skipped"
    finals = store_rows(cluster, "SELECT json_extract(data, '$.jobId'), COUNT(*) FROM events WHERE event = "
                                 "'job:completed' AND json_extract(data, '$.videoId') = ? GROUP BY 1", video_id)
    assert all(n == 1 for _, n in finals)


def kill_and_restart(cluster: Cluster) -> None:
    """SIGKILL the primary; its children exit by themselves (as test_crash_recovery checks); start again."""
    children = cluster.descendants()
    cluster.kill_primary()
    wait_until(lambda: not any(alive(p) for p in children), 10, "the children of the killed primary to exit")
    cluster.start()


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_primary_killed_during_a_stage_and_between_stages_runs_each_stage_once(
        cluster_factory: Callable[..., Cluster], long_clip: Path) -> None:
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(long_clip)
    types = ["resize", "resize", "extract-audio"]
    stages = [{"type": "resize", "width": 320, "height": 240},
              {"type": "resize", "width": 160, "height": 120, "review": True}, {"type": "extract-audio"}]
    pipeline_id = start(cluster, video_id, stages)

    def second_stage_running() -> bool:
        job_id = show(cluster, pipeline_id)["stages"][1]["jobId"]
        return bool(job_id) and cluster.job(job_id)["state"] == "running"

    wait_until(second_stage_running, 60, "the second stage to run", interval_s=0.1)
    kill_and_restart(cluster)  # during a stage
    wait_until(lambda: show(cluster, pipeline_id)["state"] == "review", 60, "the review gate", interval_s=0.2)
    kill_and_restart(cluster)  # between stages: the second completed, the third not queued
    assert show(cluster, pipeline_id)["stages"][2]["jobId"] is None
    with cluster.client() as client:
        assert client.post(f"/api/pipelines/{pipeline_id}/approve").status_code == 200
    wait_until(lambda: show(cluster, pipeline_id)["state"] == "completed", 60, "the pipeline to complete",
               interval_s=0.2)
    assert_each_stage_ran_once(cluster, video_id, pipeline_id, types)


def test_a_step_left_half_taken_is_finished_at_the_next_start(
        cluster_factory: Callable[..., Cluster], clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    """What a drain leaves when a stage completes during the grace period (no new job may be queued then):
    the stage completed, the pipeline running, the next stage without a job."""
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    ws = ws_factory(cluster)
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": 160, "height": 120, "review": True},
                                            {"type": "extract-audio"}])
    pipeline_event(ws, "pipeline:review-needed", pipeline_id)
    ws.close()
    assert cluster.stop() == 0
    with closing(sqlite3.connect(cluster.data_dir / "cluster.db")) as db, db:
        db.execute("UPDATE pipelines SET state = 'running' WHERE id = ?", (pipeline_id,))
    cluster.start()
    wait_until(lambda: show(cluster, pipeline_id)["state"] == "completed", 60, "the repaired pipeline to complete",
               interval_s=0.2)
    assert_each_stage_ran_once(cluster, video_id, pipeline_id, ["resize", "extract-audio"])
    assert "pipeline repaired" in cluster.log_path.read_text()


def test_an_upload_starts_a_named_pipeline(cluster_factory: Callable[..., Cluster], clip: Path,
                                           silent_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--pipeline", "web=resize:width=160:height=120,extract-audio",
                                                "--pipeline", "gated=hls:renditions=240/360+review"])
    ws = ws_factory(cluster)
    with cluster.client() as client:
        response = client.post("/api/upload-video", params={"pipeline": "web"}, content=clip.read_bytes(),
                               headers={"filename": "clip.mp4"})
        assert response.status_code == 201, response.text
        answer = response.json()
        unknown = client.post("/api/upload-video", params={"pipeline": "nope"}, content=clip.read_bytes(),
                              headers={"filename": "clip.mp4"})
        assert unknown.status_code == 400 and "no pipeline named 'nope'" in unknown.json()["error"]
        unfit = client.post("/api/upload-video", params={"pipeline": "web"}, content=silent_clip.read_bytes(),
                            headers={"filename": "silent.mp4"})
        assert unfit.status_code == 400 and "stage 1 (extract-audio)" in unfit.json()["error"], unfit.text
        assert [v["videoId"] for v in client.get("/api/videos").json()] == [answer["videoId"]], \
            "a refused pipeline takes its upload with it"
    pipeline_event(ws, "pipeline:completed", answer["pipelineId"])
    shown = show(cluster, answer["pipelineId"])
    assert (shown["name"], shown["videoId"]) == ("web", answer["videoId"])
    assert [(s["type"], s["params"]) for s in shown["stages"]] == [
        ("resize", {"width": 160, "height": 120, "fit": "contain"}), ("extract-audio", {})]
    with cluster.client() as client:
        response = client.post("/api/upload-video", params={"pipeline": "gated"}, content=clip.read_bytes(),
                               headers={"filename": "clip.mp4"})
    assert response.status_code == 201, response.text
    gated = response.json()["pipelineId"]
    pipeline_event(ws, "pipeline:review-needed", gated)
    assert show(cluster, gated)["stages"][0]["params"] == {"renditions": [240]}
    with cluster.client() as client:
        approved = client.post(f"/api/pipelines/{gated}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "completed", "a last stage's approval ends it"
    assert pipeline_event(ws, "pipeline:completed", gated)["data"]["stage"] == 0


@pytest.mark.parametrize(("flag", "message"), [
    ("web=resize:width", "'resize:width': 'width' is not key=value"),
    ("Web=hls", "expected NAME=STAGE"),
    ("web=telepathy", "unknown job type 'telepathy'"),
])
def test_a_malformed_named_pipeline_stops_the_start(tmp_path: Path, flag: str, message: str) -> None:
    command = [sys.executable, str(ROOT / "run_cluster.py"), "--data-dir", str(tmp_path / "data"),
               "--port", str(free_port()),
               "--workers", "1", "--executors", "0", "--pipeline", flag]
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_a_webhook_subscribed_to_pipeline_events_receives_each_step(
        cluster_factory: Callable[..., Cluster], clip: Path, receivers: Callable[..., Receiver]) -> None:  # noqa: F811
    cluster = cluster_factory(workers=1, extra=ALLOW_PRIVATE)
    receiver = receivers()
    create_webhook(cluster, receiver.url, ["pipeline:"])
    pipeline_id = start(cluster, cluster.upload(clip), [{"type": "resize", "width": 160, "height": 120}])
    receiver.wait_for(lambda got: any(r.event["event"] == "pipeline:completed" for r in got), "pipeline:completed")
    events = receiver.events()
    assert [e["event"] for e in events] == ["pipeline:started", "pipeline:stage-completed", "pipeline:completed"]
    assert all(e["data"]["pipelineId"] == pipeline_id for e in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_a_stage_that_completes_while_the_primary_drains_has_its_next_stage_queued_at_the_next_start(
        cluster_factory: Callable[..., Cluster], long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(workers=1, extra=["--shutdown-grace-s", "90"])
    video_id = cluster.upload(long_clip)
    ws = ws_factory(cluster)
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": 320, "height": 240},
                                            {"type": "extract-audio"}])
    ws.wait_event("job:started", show(cluster, pipeline_id)["stages"][0]["jobId"])
    ws.close()
    assert cluster.stop(timeout_s=100) == 0  # the running stage finishes in the grace period; no new job then
    log = cluster.log_path.read_text()
    assert "pipeline waits for the next start" in log
    cluster.start()
    wait_until(lambda: show(cluster, pipeline_id)["state"] == "completed", 60, "the pipeline to complete",
               interval_s=0.2)
    assert_each_stage_ran_once(cluster, video_id, pipeline_id, ["resize", "extract-audio"])
    assert "pipeline repaired" in cluster.log_path.read_text()


@pytest.mark.parametrize("seed", [13])
def test_a_primary_killed_at_random_moments_neither_repeats_nor_skips_a_stage(
        cluster_factory: Callable[..., Cluster], clip: Path, seed: int) -> None:
    rng = random.Random(seed)
    cluster = cluster_factory(workers=1)
    video_id = cluster.upload(clip)
    sizes = [(32 + 16 * i, 32) for i in range(6)]
    pipeline_id = start(cluster, video_id, [{"type": "resize", "width": w, "height": h} for w, h in sizes])
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 1.5))  # the random moment of the crash
        kill_and_restart(cluster)
    wait_until(lambda: show(cluster, pipeline_id)["state"] == "completed", 90, "the pipeline to complete",
               interval_s=0.2)
    assert_each_stage_ran_once(cluster, video_id, pipeline_id, ["resize"] * len(sizes))
    params = [(cluster.job(s["jobId"])["params"]["width"], s["index"]) for s in show(cluster, pipeline_id)["stages"]]
    assert params == [(w, i) for i, (w, _) in enumerate(sizes)], "each stage's own job, in order"
