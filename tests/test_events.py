"""Events over WebSocket: order, payloads, seq, exactly once (item 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.harness import Cluster, EventClient

PAYLOAD_FIELDS = {
    "job:queued": {"jobId", "type", "videoId", "queuePosition", "queuedAt", "attempt", "priority"},
    "job:started": {"jobId", "type", "videoId", "startedAt", "queuedAt", "attempt"},
    "job:progress": {"jobId", "type", "videoId", "progress", "speed", "etaSeconds"},
    "job:completed": {"jobId", "type", "videoId", "result", "queuedAt", "startedAt", "completedAt", "duration",
                      "attempts"},
}


def run_one_job(cluster: Cluster, video_id: str, clients: list[EventClient]) -> str:
    job_id = cluster.resize(video_id, 320, 240).json()["jobId"]
    for client in clients:
        client.wait_event("job:completed", job_id, timeout_s=60)
    return job_id


def test_a_client_sees_the_whole_life_of_a_job_in_order_once(
        cluster: Cluster, long_clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(long_clip)
    clients = [ws_factory(cluster) for _ in range(4)]  # spread over both web workers by the kernel
    job_id = run_one_job(cluster, video_id, clients)
    for client in clients:
        events = client.events(job_id)
        names = [e["event"] for e in events]
        progress = [e["data"]["progress"] for e in events if e["event"] == "job:progress"]
        assert names[:2] == ["job:queued", "job:started"] and names[-1] == "job:completed"
        assert set(names[2:-1]) == {"job:progress"}
        assert len(progress) >= 3 and progress == sorted(set(progress)), progress
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq grows by one per event"
        for event in events:
            assert set(event) == {"event", "seq", "ts", "data"}
            assert PAYLOAD_FIELDS[event["event"]] <= set(event["data"])
            assert event["data"]["jobId"] == job_id and event["data"]["videoId"] == video_id
        completed = events[-1]["data"]
        assert completed["attempts"] == 1
        assert completed["duration"] == round(completed["completedAt"] - completed["startedAt"])


def test_subscribing_to_a_video_room_does_not_duplicate_events(
        cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    video_id = cluster.upload(clip)
    client = ws_factory(cluster)
    client.send({"type": "subscribe-video", "videoId": video_id})
    client.wait_for(lambda ms: {"type": "subscribed", "videoId": video_id} in ms, what="subscribed")
    job_id = run_one_job(cluster, video_id, [client])
    seqs = [e["seq"] for e in client.events(job_id)]
    assert len(seqs) == len(set(seqs))
    assert [e["event"] for e in client.events(job_id)].count("job:completed") == 1


def test_bad_client_messages_get_an_error_and_keep_the_connection(
        cluster: Cluster, ws_factory: Callable[..., EventClient]) -> None:
    client = ws_factory(cluster)
    client.connection.send("not json")
    client.send({"type": "dance"})
    client.send({"type": "subscribe-video"})
    client.wait_for(lambda ms: len([m for m in ms if m.get("type") == "error"]) == 3, what="three errors")
    client.send({"type": "unsubscribe-video", "videoId": "abc"})
    client.wait_for(lambda ms: {"type": "unsubscribed", "videoId": "abc"} in ms, what="unsubscribed")
