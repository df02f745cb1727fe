"""Rate limits and caps, kept by the primary so that they hold across the web workers: 429 with Retry-After
for rates, 429 for caps, 413 for large JSON bodies, 503 for a full worker."""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from primary.rate_limits import TokenBuckets
from tests.harness import ADMIN, Cluster, EventClient, wait_until

Connect = Callable[..., EventClient]


def client_from(cluster: Cluster, token: str, address: str = "127.0.0.1") -> httpx.Client:
    """A fresh connection from a loopback address of our choice (127.0.0.0/8 is all ours)."""
    return httpx.Client(base_url=cluster.url, timeout=30, headers={"Authorization": f"Bearer {token}"},
                        transport=httpx.HTTPTransport(local_address=address))


def upload(cluster: Cluster, token: str, clip: Path, address: str = "127.0.0.1") -> httpx.Response:
    with client_from(cluster, token, address) as client:
        return client.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": "clip.mp4"})


def resize(cluster: Cluster, token: str, video_id: str, width: int, address: str = "127.0.0.1") -> httpx.Response:
    with client_from(cluster, token, address) as client:
        return client.put("/api/video/resize", json={"videoId": video_id, "width": width, "height": 120})


def login(cluster: Cluster, name: str, password: str, address: str = "127.0.0.1") -> httpx.Response:
    with httpx.Client(base_url=cluster.url, timeout=30, transport=httpx.HTTPTransport(local_address=address)) as c:
        return c.post("/api/login", json={"username": name, "password": password})


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "too many" in response.json()["error"]


def refused_status(cluster: Cluster, token: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        EventClient(cluster.ws_url, token)
    return refused.value.response.status_code


def connects(ws_factory: Connect, cluster: Cluster, token: str) -> bool:
    """A new connection (kept open) if the cluster takes one now."""
    try:
        ws_factory(cluster, token)
    except InvalidStatus:
        return False
    return True


def raw_websocket(port: int, token: str | None = None, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket handshake on a bare socket, so that the client can die without a closing handshake, or read
    nothing at all (a small ``receive_buffer`` fills at once). What follows the handshake is left unread."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect: it sets the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"{authorization}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "the server closed the connection during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def reset(sock: socket.socket) -> None:
    """Die abruptly: a TCP reset, no WebSocket close frame."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def users(cluster_factory: Callable[..., Cluster]) -> Callable[..., tuple[Cluster, str, str]]:
    """``users(**cluster options)``: a cluster with alice and bob, and their session tokens."""
    def make(**options: object) -> tuple[Cluster, str, str]:
        cluster = cluster_factory(**options)
        for name in ("alice", "bob"):
            cluster.add_user(name, f"{name}-password")
        return cluster, cluster.login("alice", "alice-password"), cluster.login("bob", "bob-password")

    return make


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_a_token_bucket_allows_a_minute_of_requests_at_once_then_refills() -> None:
    buckets = TokenBuckets(rate_per_min=3)
    for _ in range(3):
        assert buckets.wait_s("k", now=0.0) == 0.0
        buckets.take("k", now=0.0)
    assert buckets.wait_s("k", now=0.0) == pytest.approx(20.0)
    assert buckets.wait_s("k", now=15.0) == pytest.approx(5.0)
    assert buckets.wait_s("k", now=20.0) == 0.0
    assert buckets.wait_s("other", now=0.0) == 0.0
    buckets.sweep(now=60.0)
    assert len(buckets) == 0, "a bucket that filled up again is forgotten"


def test_job_requests_over_the_rate_get_429_across_both_web_workers(cluster_factory: Callable[..., Cluster],
                                                                    clip: Path) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--job-rate-per-min", "3"])
    video_id = cluster.upload(clip)
    # each on a fresh connection, which the kernel gives to either worker: counted per worker, 6 would pass
    answers = [resize(cluster, cluster.token, video_id, width) for width in range(64, 256, 32)]
    assert [a.status_code for a in answers] == [202] * 3 + [429] * 3
    for refused in answers[3:]:
        assert_rate_limited(refused)
        assert int(refused.headers["retry-after"]) <= 20  # the next token, at 3 a minute
    with cluster.client() as client:
        assert len(client.get("/api/jobs").json()) == 3, "the refused request queued nothing"


def test_upload_rate_counts_per_user_and_per_address(users: Callable[..., tuple[Cluster, str, str]],
                                                     clip: Path) -> None:
    cluster, alice, bob = users(workers=2, executors=0, extra=["--upload-rate-per-min", "2"])
    assert [upload(cluster, alice, clip).status_code for _ in range(2)] == [201, 201]
    assert_rate_limited(upload(cluster, alice, clip, "127.0.0.2"))  # alice's own bucket is empty
    assert_rate_limited(upload(cluster, bob, clip))  # and so is 127.0.0.1's
    assert upload(cluster, bob, clip, "127.0.0.3").status_code == 201


def test_upload_rate_is_checked_before_the_body_is_read(users: Callable[..., tuple[Cluster, str, str]],
                                                        clip: Path) -> None:
    cluster, alice, _bob = users(workers=1, executors=0, extra=["--upload-rate-per-min", "1"])
    assert upload(cluster, alice, clip).status_code == 201
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
        sock.sendall(f"POST /api/upload-video HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n"
                     f"filename: big.mp4\r\nContent-Length: {500 * 1024 * 1024}\r\n\r\n".encode())
        answer = sock.recv(4096)  # not one byte of the 500 MiB body was sent
    assert answer.startswith(b"HTTP/1.1 429"), answer
    assert b"retry-after: " in answer.lower()


def test_login_attempts_over_the_rate_get_429(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--login-rate-per-min", "3"])
    cluster.add_user("carol", "carol-password")
    # the harness logged in once already (admin, from 127.0.0.1)
    assert [login(cluster, *ADMIN).status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(login(cluster, *ADMIN))
    # per (name, address), not per name: nobody elsewhere can use up an account's logins (issue 11)
    assert login(cluster, *ADMIN, address="127.0.0.2").status_code == 200
    assert_rate_limited(login(cluster, "carol", "carol-password"))  # per address
    assert login(cluster, "carol", "carol-password", address="127.0.0.3").status_code == 200


def test_active_jobs_per_user_are_capped(users: Callable[..., tuple[Cluster, str, str]], clip: Path) -> None:
    cluster, alice, _bob = users(workers=2, executors=0, extra=["--max-queued-jobs-per-user", "2"])
    video_id = upload(cluster, alice, clip).json()["videoId"]
    first, second, third = (resize(cluster, alice, video_id, width) for width in (64, 96, 128))
    assert (first.status_code, second.status_code) == (202, 202)
    assert third.status_code == 429 and "active jobs" in third.json()["error"]
    assert cluster.resize(cluster.upload(clip), 64, 48).status_code == 202, "another user's jobs do not count"
    with client_from(cluster, alice) as client:
        assert client.delete(f"/api/jobs/{first.json()['jobId']}").status_code == 200
    assert resize(cluster, alice, video_id, 128).status_code == 202


def test_json_bodies_over_the_limit_get_413(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--max-json-body-kb", "1"])
    video_id = cluster.upload(clip)
    large = {"videoId": video_id, "width": 64, "height": 48, "padding": "x" * 2048}
    with cluster.client() as client:
        assert client.put("/api/video/resize", json=large).status_code == 413
        chunked = client.put("/api/video/resize", content=iter([b'{"padding": "', b"x" * 2048, b'"}']),
                             headers={"content-type": "application/json"})  # no Content-Length: counted as read
        assert chunked.status_code == 413 and chunked.json()["error"]
        assert client.put("/api/video/resize", json={**large, "padding": ""}).status_code == 202
    assert httpx.post(cluster.url + "/api/login", json={"username": "admin", "password": "x" * 2048}).status_code == 413


def test_websocket_connections_per_user_are_capped_across_the_cluster(
        users: Callable[..., tuple[Cluster, str, str]], ws_factory: Connect, raw_sockets: list[socket.socket]) -> None:
    cluster, alice, bob = users(workers=2, executors=0, extra=["--max-ws-per-user", "3"])
    first = ws_factory(cluster, alice)
    ws_factory(cluster, alice)
    raw_sockets.append(raw_websocket(cluster.port, alice))
    assert [refused_status(cluster, alice) for _ in range(4)] == [429] * 4  # whichever worker each one reaches
    ws_factory(cluster, bob)  # another user has connections of their own
    first.close()
    wait_until(lambda: connects(ws_factory, cluster, alice), 10, "a connection in place of the closed one",
               interval_s=0.1)
    reset(raw_sockets.pop())
    wait_until(lambda: connects(ws_factory, cluster, alice), 10, "a connection in place of the one that died",
               interval_s=0.1)
    assert refused_status(cluster, alice) == 429


def test_a_full_worker_refuses_websockets_with_503(cluster_factory: Callable[..., Cluster],
                                                   ws_factory: Connect) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--max-ws-per-worker", "2"])
    first = ws_factory(cluster)
    ws_factory(cluster)
    assert refused_status(cluster, cluster.token) == 503
    first.close()
    wait_until(lambda: connects(ws_factory, cluster, cluster.token), 10, "room on the worker again", interval_s=0.1)
