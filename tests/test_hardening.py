"""Hardening against a hostile user (issue 11): login lock-outs, spoofed addresses, cross-site requests,
malformed input, leaks of the cluster's insides and its files, slow clients and uploads in flight."""

from __future__ import annotations

import select
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cluster.logs import clip
from primary.limits import FailureLimiter, LoginFailures
from tests.harness import ADMIN, Cluster, wait_until

Factory = Callable[..., Cluster]
ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")


def login(cluster: Cluster, name: str, password: str, address: str = "127.0.0.1",
          headers: dict[str, str] | None = None) -> httpx.Response:
    """From a loopback address of our choice (127.0.0.0/8 is all ours)."""
    with httpx.Client(base_url=cluster.url, timeout=30, transport=httpx.HTTPTransport(local_address=address)) as c:
        return c.post("/api/login", json={"username": name, "password": password}, headers=headers)


def with_users(cluster: Cluster) -> Cluster:
    for name, password in (ALICE, BOB):
        cluster.add_user(name, password)
    return cluster


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for s in sockets:
        s.close()


def open_socket(cluster: Cluster, sockets: list[socket.socket]) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", cluster.port), timeout=20)
    sockets.append(s)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it never does)."""
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


# 1. failed logins: bounded, and nobody locks out anybody else


def test_the_failure_table_is_bounded_oldest_out_first() -> None:
    limiter = FailureLimiter(max_failures=2, window_s=60, max_keys=3)
    for key in ("a", "b", "c", "d"):
        limiter.fail(key)
        limiter.fail(key)
    assert len(limiter) == 3
    assert limiter.retry_after_s("a") == 0  # forgotten first
    assert all(limiter.retry_after_s(key) > 0 for key in ("b", "c", "d"))


def test_login_failures_count_per_name_and_address_and_per_address() -> None:
    failures = LoginFailures(per_name_and_address=2, per_address=3, window_s=60)
    failures.fail("alice", "10.0.0.1")
    failures.fail("alice", "10.0.0.1")
    assert failures.retry_after_s("alice", "10.0.0.1") > 0
    assert failures.retry_after_s("alice", "10.0.0.2") == 0, "the account is not locked everywhere"
    assert failures.retry_after_s("bob", "10.0.0.1") == 0, "alice's typos do not lock out bob"
    failures.fail("carol", "10.0.0.1")
    assert failures.retry_after_s("dave", "10.0.0.1") > 0, "the address, past its looser bound"


def test_log_lines_carry_a_bounded_prefix_of_user_strings() -> None:
    assert clip("x" * 10) == "x" * 10
    assert clip("x" * 100_000).startswith("x" * 64) and len(clip("x" * 100_000)) < 100


def test_a_stranger_cannot_lock_an_account_nor_typos_a_neighbour(cluster_factory: Factory) -> None:
    cluster = with_users(cluster_factory(workers=2, executors=0, extra=[
        "--login-max-failures", "3", "--login-max-failures-per-address", "6", "--login-rate-per-min", "0"]))
    assert [login(cluster, "alice", f"guess-{i}", "127.0.0.2").status_code for i in range(4)] == [401] * 3 + [429]
    assert login(cluster, *ALICE, "127.0.0.3").status_code == 200, "alice, from elsewhere, is not locked out"
    assert login(cluster, *BOB, "127.0.0.2").status_code == 200, "bob, behind the same address, is not either"
    for i in range(3):
        login(cluster, f"name-{i}", "guess", "127.0.0.2")
    refused = login(cluster, *BOB, "127.0.0.2")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1, "the address, past 6 failures"


def test_long_names_are_400_and_never_reach_the_log(cluster_factory: Factory) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    name = "n" * 65 + "-marker"
    response = login(cluster, name, "whatever-1")
    assert response.status_code == 400 and "at most 64" in response.json()["error"]
    assert login(cluster, "m" * 64, "whatever-1").status_code == 401
    assert "-marker" not in cluster.log_tail(200)


# 4. X-Forwarded-For only from trusted proxies


def test_a_rotating_forwarded_for_from_an_untrusted_peer_is_ignored(cluster_factory: Factory) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--login-max-failures", "2",
                                                              "--login-rate-per-min", "0"])
    answers = [login(cluster, "admin", "wrong-password", headers={"X-Forwarded-For": f"10.1.0.{i}"}).status_code
               for i in range(3)]
    assert answers == [401, 401, 429]


def test_a_trusted_proxy_is_believed(cluster_factory: Factory) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=[
        "--login-max-failures", "2", "--login-rate-per-min", "0", "--forwarded-allow-ips", "127.0.0.1"])
    answers = [login(cluster, "admin", "wrong-password", headers={"X-Forwarded-For": f"10.1.0.{i}"}).status_code
               for i in range(3)]
    assert answers == [401, 401, 401], "each forwarded address has its own count"
    spoofed = {"X-Forwarded-For": "10.9.9.9, 10.1.0.7"}  # a client can prepend; the proxy appended 10.1.0.7
    assert [login(cluster, "admin", "wrong", headers=spoofed).status_code for _ in range(3)] == [401, 401, 429]
    assert login(cluster, "admin", "wrong", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 401


# 3. cross-site requests (the browser's view is in test_csrf_browser.py)


def cookie_client(cluster: Cluster, origin: str | None) -> httpx.Client:
    """Like a browser: the session cookie, and the Origin a page at ``origin`` would send."""
    token = cluster.login(*ADMIN)
    headers = {"Origin": origin} if origin else {}
    return httpx.Client(base_url=cluster.url, timeout=30, cookies={"token": token}, headers=headers)


def test_state_changes_need_json_and_the_cluster_s_own_origin(cluster_factory: Factory, clip: Path) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    video_id = cluster.upload(clip)
    resize = {"videoId": video_id, "width": 64, "height": 48}
    with cookie_client(cluster, "http://127.0.0.1:1") as foreign:
        refused = foreign.put("/api/video/resize", json=resize)
        assert refused.status_code == 403 and "not this cluster's origin" in refused.json()["error"]
        assert foreign.post("/api/queue/pause").status_code == 403
    with cookie_client(cluster, None) as no_origin:
        assert no_origin.post("/api/queue/pause").status_code == 403
        referer = no_origin.post("/api/queue/pause", headers={"Referer": cluster.url + "/dashboard"})
        assert referer.status_code == 200
        assert no_origin.post("/api/queue/resume", headers={"Referer": "http://evil.example/x"}).status_code == 403
    with cookie_client(cluster, cluster.url) as own:
        text_plain = own.put("/api/video/resize", content=b'{"videoId": "x", "width": 64, "height": 48}',
                             headers={"content-type": "text/plain"})
        assert text_plain.status_code == 403 and "application/json" in text_plain.json()["error"]
        assert own.put("/api/video/resize", json=resize).status_code == 202
        assert own.patch("/api/video/extract-audio", params={"videoId": video_id}).status_code == 202
        assert own.post("/api/upload-video", content=clip.read_bytes(),
                        headers={"filename": "c.mp4", "content-type": "video/mp4"}).status_code == 201
    with cluster.client() as curl_like:  # Bearer, no Origin: no ambient credential to forge with
        assert curl_like.post("/api/queue/resume").status_code == 200
        assert curl_like.put("/api/video/resize", content=b"{}", headers={"content-type": "text/plain"}).status_code \
            == 403


def test_login_without_origin_works_but_a_foreign_one_is_refused(cluster_factory: Factory) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--allowed-origins", "https://app.example"])
    assert login(cluster, *ADMIN).status_code == 200
    assert login(cluster, *ADMIN, headers={"Origin": "http://evil.example"}).status_code == 403
    assert login(cluster, *ADMIN, headers={"Origin": "https://app.example"}).status_code == 200
    assert login(cluster, *ADMIN, headers={"Origin": cluster.url}).status_code == 200


def test_the_websocket_upgrade_checks_the_origin(cluster_factory: Factory) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    cookie = {"Cookie": f"token={cluster.token}"}
    with pytest.raises(InvalidStatus) as foreign:
        connect(cluster.ws_url, origin="http://evil.example", additional_headers=cookie, open_timeout=10)
    assert foreign.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as no_origin:
        connect(cluster.ws_url, additional_headers=cookie, open_timeout=10)
    assert no_origin.value.response.status_code == 403
    with connect(cluster.ws_url, origin=cluster.url, additional_headers=cookie, open_timeout=10) as own:
        assert '"welcome"' in own.recv(timeout=10)
    bearer = {"Authorization": f"Bearer {cluster.token}"}
    with connect(cluster.ws_url, additional_headers=bearer, open_timeout=10) as script:
        assert '"welcome"' in script.recv(timeout=10)


def test_the_cookie_is_secure_over_https_from_a_trusted_proxy_only(cluster_factory: Factory) -> None:
    plain = cluster_factory(workers=1, executors=0)
    https = {"X-Forwarded-Proto": "https"}
    assert "secure" not in login(plain, *ADMIN, headers=https).headers["set-cookie"].lower()
    proxied = cluster_factory(workers=1, executors=0, extra=["--forwarded-allow-ips", "127.0.0.1"])
    cookie = login(proxied, *ADMIN, headers=https).headers["set-cookie"].lower()
    assert "secure" in cookie and "samesite=lax" in cookie
    with cookie_client(proxied, "https://cluster.example") as client:
        forwarded = {**https, "X-Forwarded-Host": "cluster.example"}
        assert client.post("/api/queue/pause", headers=forwarded).status_code == 200
        assert client.post("/api/queue/resume").status_code == 403, "http://127.0.0.1:port is not that origin"


# 5. malformed input: 400, short, no traceback


MALFORMED_BODIES = [
    b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50 + b"1" + b"}" * 50, b'{"username": ' + b"9" * 5000 + b"}",
    b'{"username": "\\ud800", "password": "x-password"}', b'{"username": "a", "password": NaN}',
    b'{"width": 1e999}', b"\xff\xfe", b'{"username": "a", "password": "' + "é".encode("latin-1") + b'"}',
]


@pytest.mark.parametrize("body", MALFORMED_BODIES, ids=range(len(MALFORMED_BODIES)))
def test_malformed_json_is_a_short_400(cluster_factory: Factory, body: bytes) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--max-json-body-kb", "512"])
    json_type = {"content-type": "application/json"}
    with cluster.client() as client:
        answers = [httpx.post(cluster.url + "/api/login", content=body, headers=json_type, timeout=30),
                   client.put("/api/video/resize", content=body, headers=json_type),
                   client.put("/api/user", content=body, headers=json_type)]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert len(error) < 120 and "codec" not in error and "Traceback" not in answer.text


@pytest.mark.parametrize("query", ["dimensions=²x²", "dimensions=" + "9" * 5000 + "x2", "dimensions=x"])
def test_malformed_dimensions_are_400(cluster_factory: Factory, clip: Path, query: str) -> None:
    cluster = cluster_factory(workers=1, executors=0)
    video_id = cluster.upload(clip)
    with cluster.client() as client:
        answer = client.get(f"/get-video-asset?videoId={video_id}&type=resize&{query}")
    assert answer.status_code == 400 and answer.json()["error"] == "dimensions must look like 320x240"


def test_malformed_limits_and_numbers_are_400(cluster: Cluster) -> None:
    with cluster.client() as client:
        for query in ("limit=²", "limit=٣", "limit=" + "9" * 5000, "limit=-1"):
            assert client.get(f"/api/jobs?{query}").status_code == 400, query
            assert client.get(f"/api/queue/dead-letter?{query}").status_code == 400, query
        for value in ("nan", "inf", "1e999", "²"):
            assert client.post(f"/api/queue/clean?olderThan={value}").status_code == 400, value


# 6. leaks


def test_health_says_only_ok_without_a_login(cluster_factory: Factory) -> None:
    cluster = with_users(cluster_factory(workers=1, executors=0))
    assert httpx.get(cluster.url + "/api/health").json() == {"status": "ok"}
    alice = {"Authorization": f"Bearer {cluster.login(*ALICE)}"}
    assert httpx.get(cluster.url + "/api/health", headers=alice).json() == {"status": "ok"}
    admin = httpx.get(cluster.url + "/api/health", headers={"Authorization": f"Bearer {cluster.token}"}).json()
    assert admin["status"] == "ok" and {"processes", "queue", "uptimeS"} <= admin.keys()


def test_metrics_need_an_administrator_or_the_metrics_token(cluster_factory: Factory) -> None:
    cluster = with_users(cluster_factory(workers=1, executors=0, extra=["--metrics-token", "scraper-secret"]))

    def scrape(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(cluster.url + "/metrics", headers=headers, timeout=10).status_code

    assert scrape(None) == 401
    assert scrape(cluster.login(*ALICE)) == 403
    assert scrape("not-the-secret") == 403
    assert scrape("scraper-secret") == 200
    assert scrape(cluster.token) == 200


def test_the_data_dir_is_private(tmp_path: Path, clip: Path) -> None:
    cluster = Cluster(tmp_path / "data", workers=1, executors=0)
    cluster.add_user(*ADMIN, admin=True)
    cluster.data_dir.chmod(0o755)
    (cluster.data_dir / "cluster.db").chmod(0o644)  # as an older version left it
    try:
        cluster.start()
        video_id = cluster.upload(clip)
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [
            cluster.data_dir, cluster.data_dir / "storage", *cluster.data_dir.glob("cluster.db*"),
            *(cluster.data_dir / "storage" / video_id).iterdir()]}
        assert {"cluster.db", "cluster.db-wal", "cluster.db-shm"} <= modes.keys()
        assert modes[cluster.data_dir.name] == 0o700 and modes["storage"] == 0o700
        files = {name: mode for name, mode in modes.items() if name not in (cluster.data_dir.name, "storage")}
        assert set(files.values()) == {0o600}, files
    finally:
        cluster.stop()


# 7. slow clients


def trickle_until_closed(s: socket.socket, line: bytes, interval_s: float, max_lines: int) -> bytes:
    """Send ``line`` every ``interval_s`` (as a slow client would) until the server closes the connection;
    what it sent meanwhile. AssertionError if it is still open after ``max_lines``."""
    received = b""
    for _ in range(max_lines):
        try:
            s.sendall(line)
            readable, _, _ = select.select([s], [], [], interval_s)
            if readable:
                chunk = s.recv(65536)
                if not chunk:
                    return received
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            return received
    raise AssertionError(f"the connection is still open after {max_lines} lines")


def test_headers_that_trickle_are_cut_off(cluster_factory: Factory, raw_sockets: list[socket.socket]) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--header-timeout-s", "1"])
    silent = open_socket(cluster, raw_sockets)
    trickling = open_socket(cluster, raw_sockets)
    trickling.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    assert b"200" not in trickle_until_closed(trickling, b"X-Slow: 1\r\n", 0.25, 60)
    assert read_until_closed(silent) == b""
    assert httpx.get(cluster.url + "/api/health").status_code == 200
    kept_alive = open_socket(cluster, raw_sockets)  # a whole request in time is served as ever
    kept_alive.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_stalled_upload_is_408_and_leaves_no_temp_file(cluster_factory: Factory,
                                                        raw_sockets: list[socket.socket]) -> None:
    cluster = cluster_factory(workers=1, executors=0, extra=["--upload-idle-s", "1"])
    s = open_socket(cluster, raw_sockets)
    s.sendall(b"POST /api/upload-video HTTP/1.1\r\nHost: x\r\nfilename: a.mp4\r\nContent-Length: 100000\r\n"
              + f"Authorization: Bearer {cluster.token}\r\n\r\n".encode() + b"\0" * 1000)
    answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
    temp_dir = cluster.data_dir / "storage" / ".tmp"
    assert list(temp_dir.glob("*")) == []


# 2. uploads in flight


def start_upload(cluster: Cluster, token: str, sockets: list[socket.socket]) -> socket.socket:
    """An upload that has begun and holds its slot (the rest of its body never comes)."""
    s = open_socket(cluster, sockets)
    s.sendall(b"POST /api/upload-video HTTP/1.1\r\nHost: x\r\nfilename: a.mp4\r\nContent-Length: 100000\r\n"
              + f"Authorization: Bearer {token}\r\n\r\n".encode() + b"\0" * 1000)
    return s


def test_uploads_in_flight_are_capped_per_user_and_per_worker(cluster_factory: Factory, clip: Path,
                                                             raw_sockets: list[socket.socket]) -> None:
    cluster = with_users(cluster_factory(workers=1, executors=0, extra=[
        "--max-uploads-per-user", "1", "--max-uploads-per-worker", "2", "--upload-idle-s", "60"]))
    alice, bob = cluster.login(*ALICE), cluster.login(*BOB)

    def upload(token: str) -> httpx.Response:
        with cluster.client(token) as client:
            return client.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": "c.mp4"})

    start_upload(cluster, alice, raw_sockets)
    busy = wait_until(lambda: (r := upload(alice)).status_code == 429 and r, 10, "alice's second upload refused")
    assert int(busy.headers["retry-after"]) >= 1 and "in flight" in busy.json()["error"]
    start_upload(cluster, bob, raw_sockets)
    full = wait_until(lambda: (r := upload(cluster.token)).status_code == 429 and r, 10, "the worker full")
    assert "this worker" in full.json()["error"]
    for s in raw_sockets:
        s.close()
    wait_until(lambda: upload(alice).status_code == 201, 10, "a slot freed by the aborted uploads")


# 9. security headers


def test_pages_static_files_and_api_carry_security_headers(cluster: Cluster) -> None:
    for path in ("/", "/dashboard", "/websocket-demo.html", "/common.js", "/style.css", "/api/health"):
        headers = httpx.get(cluster.url + path, timeout=10).headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "object-src 'none'" in csp and "base-uri 'self'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "same-origin"
