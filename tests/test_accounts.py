"""Accounts and isolation: hashed passwords, sessions, 401s, and users kept apart (issue 4, items 1-3)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from primary.accounts import AccountStore
from tests.harness import ADMIN, ROOT, Cluster, EventClient

PROTECTED = [
    ("GET", "/api/videos"), ("GET", "/api/user"), ("PUT", "/api/user"), ("DELETE", "/api/logout"),
    ("POST", "/api/upload-video"), ("PUT", "/api/video/resize"), ("PUT", "/api/video/convert?videoId=x"),
    ("GET", "/api/jobs"), ("GET", "/api/jobs/x"), ("DELETE", "/api/jobs/x"), ("POST", "/api/jobs/x/retry"),
    ("GET", "/api/queue/stats"), ("GET", "/api/queue/dead-letter"), ("POST", "/api/queue/pause"),
    ("GET", "/get-video-asset?videoId=x&type=original"),
]


def user_cli(data_dir: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "run_cluster.py", "user", "--data-dir", str(data_dir), *args],
                          cwd=ROOT, input=password, text=True, capture_output=True, timeout=30, check=False)


def db_rows(cluster: Cluster, query: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(cluster.data_dir / "cluster.db")) as db:
        return db.execute(query).fetchall()


@pytest.fixture
def two_users(cluster: Cluster) -> tuple[str, str]:
    for name in ("alice", "bob"):
        cluster.add_user(name, f"{name}-password")
    return cluster.login("alice", "alice-password"), cluster.login("bob", "bob-password")


def test_a_fresh_data_dir_gets_an_administrator_with_a_random_password(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "fresh", workers=1, executors=0)
    cluster.start(as_admin=False)
    try:
        printed = re.findall(r"created the administrator 'admin' with the password: (\S+)", cluster.log_tail(80))
        assert len(printed) == 1
        token = cluster.login("admin", printed[0])
        assert httpx.get(cluster.url + "/api/user", headers={"Authorization": f"Bearer {token}"}).json()["admin"]
    finally:
        cluster.stop()


def test_user_commands_manage_accounts_with_hashed_passwords(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert user_cli(data_dir, "add", "carol", "--password-stdin", password="carol-secret\n").returncode == 0
    assert user_cli(data_dir, "add", "dave", "--admin", "--password-stdin", password="dave-secret\n").returncode == 0
    assert user_cli(data_dir, "add", "carol", "--password-stdin", password="whatever-1\n").returncode == 1
    assert user_cli(data_dir, "add", "eve", "--password-stdin", password="short\n").returncode == 1
    listing = user_cli(data_dir, "list").stdout
    assert "carol\tuser" in listing and "dave\tadmin" in listing
    with closing(sqlite3.connect(data_dir / "cluster.db")) as db:
        hashes = [h for (h,) in db.execute("SELECT password_hash FROM users")]
    assert all(h.startswith("scrypt$") and "secret" not in h for h in hashes)
    assert user_cli(data_dir, "passwd", "carol", "--password-stdin", password="carol-new-secret\n").returncode == 0
    assert user_cli(data_dir, "remove", "carol").returncode == 0
    assert user_cli(data_dir, "remove", "carol").returncode == 1
    assert "carol" not in user_cli(data_dir, "list").stdout


@pytest.mark.parametrize("method, path", PROTECTED)
def test_every_api_route_needs_a_session(cluster: Cluster, method: str, path: str) -> None:
    response = httpx.request(method, cluster.url + path, timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"]


def test_health_login_and_pages_need_no_session(cluster: Cluster) -> None:
    assert httpx.get(cluster.url + "/api/health").status_code == 200
    assert httpx.get(cluster.url + "/websocket-demo.html").status_code == 200


def test_websocket_without_a_session_is_refused_with_401(cluster: Cluster) -> None:
    with pytest.raises(InvalidStatus) as refused:
        EventClient(cluster.ws_url)
    assert refused.value.response.status_code == 401


def test_login_sets_an_httponly_cookie_and_sessions_are_stored_hashed(cluster: Cluster) -> None:
    response = httpx.post(cluster.url + "/api/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    cookie = response.headers["set-cookie"]
    token = response.json()["token"]
    assert f"token={token}" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    with httpx.Client(base_url=cluster.url, cookies={"token": token}) as browser_like:
        assert browser_like.get("/api/user").json()["name"] == "admin"
    stored = [h for (h,) in db_rows(cluster, "SELECT token_hash FROM sessions")]
    assert token not in stored and len(stored) >= 1


def test_wrong_passwords_are_401_then_slowed_down_with_429(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=2, executors=0, extra=["--login-max-failures", "3"])
    answers = [httpx.post(cluster.url + "/api/login", json={"username": "admin", "password": f"wrong-{i}"})
               for i in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]  # counted across both web workers
    assert int(answers[-1].headers["retry-after"]) >= 1
    bad = httpx.post(cluster.url + "/api/login", json={"username": "admin"})
    assert bad.status_code == 400


def test_logout_ends_the_session(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    token = cluster.login(*ADMIN)
    with cluster.client(token) as client:
        assert client.delete("/api/logout").status_code == 200
        assert client.get("/api/user").status_code == 401


def test_changing_the_password_ends_old_sessions(cluster_factory: Callable[..., Cluster]) -> None:
    # issue 9: the session that changes the password stays; the user's other sessions end, and `name` is
    # the display name (the login name never changes)
    cluster = cluster_factory(workers=1, executors=0)
    cluster.add_user("frank", "frank-password")
    token = cluster.login("frank", "frank-password")
    other = cluster.login("frank", "frank-password")
    with cluster.client(token) as client:
        assert client.put("/api/user", json={"password": "short"}).status_code == 400
        assert client.put("/api/user", json={"name": "franky", "password": "frank-new-password"}).status_code == 200
        assert client.get("/api/user").json()["name"] == "franky"
    assert cluster.login("frank", "frank-new-password")
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {other}"}) as client:
        assert client.get("/api/user").status_code == 401


def test_users_see_and_act_on_their_own_videos_and_jobs_only(cluster_factory: Callable[..., Cluster], clip: Path,
                                                             ws_factory: Callable[..., EventClient]) -> None:
    cluster = cluster_factory(executors=1)
    for name in ("alice", "bob"):
        cluster.add_user(name, f"{name}-password")
    alice, bob = cluster.login("alice", "alice-password"), cluster.login("bob", "bob-password")
    alice_ws, bob_ws, admin_ws = ws_factory(cluster, alice), ws_factory(cluster, bob), ws_factory(cluster)
    with cluster.client(alice) as a:
        video_id = a.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": "a.mp4"}).json()[
            "videoId"]
        job_id = a.put("/api/video/resize", json={"videoId": video_id, "width": 160, "height": 120}).json()["jobId"]
    alice_ws.wait_event("job:completed", job_id)
    admin_ws.wait_event("job:completed", job_id)
    with cluster.client(bob) as b:
        refused = [
            b.get("/get-video-asset", params={"videoId": video_id, "type": "original"}),
            b.put("/api/video/resize", json={"videoId": video_id, "width": 320, "height": 240}),
            b.put("/api/video/convert", params={"videoId": video_id}, json={"format": "webm"}),
            b.get(f"/api/jobs/{job_id}"), b.delete(f"/api/jobs/{job_id}"), b.post(f"/api/jobs/{job_id}/retry"),
        ]
        assert [r.status_code for r in refused] == [404] * len(refused)
        assert b.get("/api/videos").json() == [] and b.get("/api/jobs").json() == []
        assert b.post("/api/queue/pause").status_code == 403
    bob_ws.send({"type": "subscribe-video", "videoId": video_id})
    bob_ws.wait_for(lambda ms: any(m.get("type") == "error" and m.get("videoId") == video_id for m in ms),
                    what="a refused subscription")
    assert bob_ws.events(job_id) == [], "bob never receives alice's events"
    with cluster.client() as admin:
        assert [v["videoId"] for v in admin.get("/api/videos").json()] == [video_id]
        assert admin.get(f"/api/jobs/{job_id}").status_code == 200


def test_expired_sessions_are_pruned_and_live_ones_kept(tmp_path: Path) -> None:
    accounts = AccountStore(tmp_path / "cluster.db")
    try:
        user = accounts.add_user("carol", "carol-secret")
        accounts.create_session(user.id, "expired-token", ttl_s=-1)
        accounts.create_session(user.id, "live-token", ttl_s=3600)
        assert accounts.prune_sessions() == 1
        assert accounts.session_user("live-token") is not None
        assert accounts.prune_sessions() == 0
    finally:
        accounts.close()
