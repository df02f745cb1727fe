"""Rooms narrow what a WebSocket client hears (issue 9, item 1): a video room, a job room, subscribe-all,
only rooms the client may see, each event once, and a resume that keeps to the rooms.

The clusters run without executors, so jobs stay queued: `job:queued` and `job:cancelled` are the events.
Events reach a client in seq order, so "nothing of X" is checked after a later event has arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from cluster.protocol import Event
from tests.harness import ADMIN, Cluster, EventClient
from tests.test_pages import UI_S, log_in, page  # noqa: F401 - the page tests' fixture
from workers.web.hub import Hub
from workers.web.resume import MAX_SINCE
from workers.web.rooms import JOB, VIDEO

PASSWORD = "room-password-1"


def user_token(cluster: Cluster, name: str) -> str:
    cluster.add_user(name, PASSWORD)
    return cluster.login(name, PASSWORD)


def upload_as(cluster: Cluster, token: str, clip: Path, name: str) -> str:
    return cluster.upload(clip, name, token=token)


def resize_as(cluster: Cluster, token: str, video_id: str, width: int) -> str:
    response = cluster.resize(video_id, width, 48, token=token)
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def join(client: EventClient, key: str, room_id: str) -> None:
    kind = "video" if key == "videoId" else "job"
    client.send({"type": f"subscribe-{kind}", key: room_id})
    client.wait_for(lambda ms: {"type": "subscribed", key: room_id} in ms, what=f"subscribed to {room_id}")


def replies(client: EventClient, kind: str) -> list[dict[str, Any]]:
    return [m for m in client.wait_for(lambda _ms: True) if m.get("type") == kind]


def wait_replies(client: EventClient, kind: str, count: int) -> list[dict[str, Any]]:
    client.wait_for(lambda ms: len([m for m in ms if m.get("type") == kind]) >= count, what=f"{count} {kind}")
    return replies(client, kind)


@pytest.fixture
def quiet_cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(executors=0)


def test_a_video_room_hears_nothing_of_another_video_of_the_same_user(
        quiet_cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    alice = user_token(cluster, "alice")
    first, second = upload_as(cluster, alice, clip, "a.mp4"), upload_as(cluster, alice, clip, "b.mp4")
    everything = ws_factory(cluster, alice)
    room = ws_factory(cluster, alice)
    join(room, "videoId", first)

    other_job = resize_as(cluster, alice, second, 64)
    everything.wait_event("job:queued", other_job)
    own_job = resize_as(cluster, alice, first, 64)
    room.wait_event("job:queued", own_job)
    everything.wait_event("job:queued", own_job)
    assert {e["data"]["videoId"] for e in room.events()} == {first}
    assert {e["data"]["videoId"] for e in everything.events()} == {first, second}


def test_a_job_room_hears_that_job_only(quiet_cluster: Cluster, clip: Path,
                                        ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    alice = user_token(cluster, "alice")
    video = upload_as(cluster, alice, clip, "a.mp4")
    watched = resize_as(cluster, alice, video, 64)
    room = ws_factory(cluster, alice)
    join(room, "jobId", watched)

    sibling = resize_as(cluster, alice, video, 80)  # the same video, another job
    with cluster.client(alice) as client:
        assert client.delete(f"/api/jobs/{watched}").status_code == 200
    room.wait_event("job:cancelled", watched)
    assert [e["data"]["jobId"] for e in room.events()] == [watched]
    assert sibling not in {e["data"]["jobId"] for e in room.events()}


def test_subscribe_all_widens_again_and_leaving_the_last_room_does_not(
        quiet_cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    first, second = cluster.upload(clip, "a.mp4"), cluster.upload(clip, "b.mp4")
    client = ws_factory(cluster)  # an administrator: hears everything until it joins a room
    join(client, "videoId", first)
    client.send({"type": "unsubscribe-video", "videoId": first})
    client.wait_for(lambda ms: {"type": "unsubscribed", "videoId": first} in ms, what="unsubscribed")

    unheard = cluster.resize(first, 64, 48).json()["jobId"]  # no room left: cluster notices only
    with cluster.client() as http:
        assert http.post("/api/queue/pause").status_code == 200
    client.wait_for(lambda ms: any(m.get("event") == "queue:paused" for m in ms), what="queue:paused")
    assert client.events(unheard) == []

    client.send({"type": "subscribe-all"})
    client.wait_for(lambda ms: {"type": "subscribed", "all": True} in ms, what="subscribed to all")
    heard = cluster.resize(second, 64, 48).json()["jobId"]
    client.wait_event("job:queued", heard)


def test_a_client_may_join_only_rooms_it_may_see(quiet_cluster: Cluster, clip: Path,
                                                ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    alice, bob = user_token(cluster, "alice"), user_token(cluster, "bob")
    bobs_video = upload_as(cluster, bob, clip, "b.mp4")
    bobs_job = resize_as(cluster, bob, bobs_video, 64)
    alices_video = upload_as(cluster, alice, clip, "a.mp4")
    client = ws_factory(cluster, alice)
    client.send({"type": "subscribe-video", "videoId": bobs_video})
    client.send({"type": "subscribe-video", "videoId": "no-such-video"})
    client.send({"type": "subscribe-job", "jobId": bobs_job})
    client.send({"type": "subscribe-job", "jobId": "no-such-job"})
    errors = wait_replies(client, "error", 4)
    assert errors == [
        {"type": "error", "error": f"video {bobs_video} not found", "videoId": bobs_video},
        {"type": "error", "error": "video no-such-video not found", "videoId": "no-such-video"},
        {"type": "error", "error": f"job {bobs_job} not found", "jobId": bobs_job},
        {"type": "error", "error": "job no-such-job not found", "jobId": "no-such-job"},
    ], "another user's video or job is answered as one that does not exist"
    assert replies(client, "subscribed") == []

    bobs_next = resize_as(cluster, bob, bobs_video, 80)  # alice joined no room: she hears all she may see
    alices_job = resize_as(cluster, alice, alices_video, 64)
    client.wait_event("job:queued", alices_job)
    assert client.events(bobs_next) == [] and client.events(bobs_job) == []

    admin = ws_factory(cluster)  # an administrator may join any user's room
    join(admin, "videoId", alices_video)


def test_an_event_reaches_a_client_once_when_two_of_its_rooms_match(
        quiet_cluster: Cluster, clip: Path, ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    video = cluster.upload(clip)
    job_id = cluster.resize(video, 64, 48).json()["jobId"]
    client = ws_factory(cluster)
    join(client, "videoId", video)
    join(client, "jobId", job_id)
    with cluster.client() as http:
        assert http.delete(f"/api/jobs/{job_id}").status_code == 200
    client.wait_event("job:cancelled", job_id)
    later = cluster.resize(video, 80, 48).json()["jobId"]
    client.wait_event("job:queued", later)
    assert [e["event"] for e in client.events(job_id)] == ["job:cancelled"]
    seqs = [e["seq"] for e in client.events()]
    assert seqs == sorted(set(seqs))


def test_a_resume_replays_only_what_the_rooms_allow(quiet_cluster: Cluster, clip: Path,
                                                   ws_factory: Callable[..., EventClient]) -> None:
    cluster = quiet_cluster
    first, second = cluster.upload(clip, "a.mp4"), cluster.upload(clip, "b.mp4")
    watcher = ws_factory(cluster)
    jobs = [cluster.resize(video, 64 + 2 * i, 48).json()["jobId"] for i, video in enumerate([first, second] * 3)]
    watcher.wait_event("job:queued", jobs[-1])

    late = ws_factory(cluster)  # as a page does after a drop: its rooms first, then the resume
    late.send({"type": "subscribe-video", "videoId": first})
    late.send({"type": "resume", "since": 0})
    answer = wait_replies(late, "resumed", 1)[0]
    expected = [e["seq"] for e in watcher.events() if e["data"].get("videoId") == first]
    assert [e["seq"] for e in late.events()] == expected
    assert answer["replayed"] == len(expected)


def test_an_unusable_resume_is_an_error_message_and_the_connection_stays(
        cluster: Cluster, ws_factory: Callable[..., EventClient]) -> None:
    client = ws_factory(cluster)
    unusable = [2**63, -1, MAX_SINCE + 1, 10**30, "12", None, True, 1.5, 10**9]  # 10**9: past any seq here
    for since in unusable:
        client.send({"type": "resume", "since": since})
    errors = wait_replies(client, "error", len(unusable))
    assert all("since" in e["error"] for e in errors), errors
    assert errors[-1]["error"].startswith(f"since {10**9} is past the newest event")
    client.connection.send("[" * 40_000)  # nested too deep for the parser: a plain error too
    client.connection.send('{"type": "resume", "since": 1' + "0" * 5000 + "}")  # too many digits to read
    wait_replies(client, "error", len(unusable) + 2)
    client.send({"type": "subscribe-all"})
    client.wait_for(lambda ms: {"type": "subscribed", "all": True} in ms, what="the connection still serves")


# the index itself, without processes: each event's clients come from the rooms and the user it names


class FakeWriter:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True


def test_the_hub_finds_an_events_clients_through_its_index() -> None:
    hub = Hub(held_max=100)

    def connect(user: str, admin: bool = False) -> Any:
        client = hub.connect(FakeWriter(), user, admin, f"session-{user}")  # type: ignore[arg-type]
        client.resume.release(client)  # live, as after the first moments of a connection
        return client

    crowd = [connect(f"user{i}") for i in range(1000)]
    alice_all, admin_all = connect("alice"), connect("root", admin=True)
    in_video, in_job = connect("alice"), connect("alice")
    hub.index.join(in_video, VIDEO, "v1")
    hub.index.join(in_job, JOB, "j2")
    hub.index.join(in_job, VIDEO, "v2")

    event = {"jobId": "j2", "videoId": "v2", "userId": "alice"}
    assert set(hub.index.audience(event)) == {alice_all, admin_all, in_job}
    hub.deliver(Event("job:queued", 1, 0.0, event), "{}")
    assert [len(c._writer.frames) for c in (alice_all, admin_all, in_job, in_video)] == [1, 1, 1, 0]
    assert not any(c._writer.frames for c in crowd)
    assert set(hub.index.audience({"paused": True})) == hub.clients, "a cluster notice reaches everyone"

    hub.index.listen_to_all(in_job)
    assert set(hub.index.audience({"jobId": "j9", "videoId": "v2", "userId": "alice"})) == {alice_all, admin_all,
                                                                                           in_job}
    hub.disconnect(in_job)
    assert set(hub.index.audience(event)) == {alice_all, admin_all}


# the live-events page: watch one video, one job, or all


def test_the_live_events_page_watches_one_video_one_job_or_all(
        quiet_cluster: Cluster, clip: Path, page: Page) -> None:  # noqa: F811 - the fixture
    cluster = quiet_cluster
    first, second = cluster.upload(clip, "a.mp4"), cluster.upload(clip, "b.mp4")
    page.goto(cluster.url + "/websocket-demo.html")
    log_in(page, *ADMIN)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=UI_S)
    expect(page.locator("#watching")).to_contain_text("all the events you may see")
    page.fill("#video-id", first)
    page.click("#subscribe")
    expect(page.locator("#status-log")).to_contain_text(f"Subscribed to video {first}", timeout=UI_S)
    expect(page.locator("#watching")).to_contain_text(f"video {first}")

    unheard = cluster.resize(second, 64, 48).json()["jobId"]
    heard = cluster.resize(first, 64, 48).json()["jobId"]
    expect(page.locator(f'.event[data-event="job:queued"][data-job-id="{heard}"]')).to_have_count(1, timeout=UI_S)
    expect(page.locator(f'.event[data-job-id="{unheard}"]')).to_have_count(0)

    page.click("#watch-all")
    expect(page.locator("#status-log")).to_contain_text("Watching all the events you may see", timeout=UI_S)
    widened = cluster.resize(second, 80, 48).json()["jobId"]
    expect(page.locator(f'.event[data-event="job:queued"][data-job-id="{widened}"]')).to_have_count(1, timeout=UI_S)

    page.select_option("#room-kind", "job")
    page.fill("#video-id", widened)
    page.click("#subscribe")
    expect(page.locator("#status-log")).to_contain_text(f"Subscribed to job {widened}", timeout=UI_S)
    sibling = cluster.resize(second, 96, 48).json()["jobId"]
    with cluster.client() as http:
        assert http.delete(f"/api/jobs/{widened}").status_code == 200
    expect(page.locator(f'.event[data-event="job:cancelled"][data-job-id="{widened}"]')).to_have_count(
        1, timeout=UI_S)
    expect(page.locator(f'.event[data-job-id="{sibling}"]')).to_have_count(0)
