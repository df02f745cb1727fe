"""Remote web tiers (``run_cluster.py web``) over CurveZMQ, and the key checks of the primary's TCP sockets.

Over loopback: a revoked key's open control connection is refused on its next message and its event
connection dropped; a refused web tier (unknown key, another primary's, a primary on local disk) says why
and exits non-zero. In network namespaces (skipped where ``ip netns`` is not permitted, or without HAProxy):
the primary and moto's S3 server on the root host, a web tier on each of two other hosts, HAProxy in front of
both; through it a user logs in, uploads, submits, hears the job complete on a WebSocket of the other tier,
downloads (a redirect to S3), and resumes on the first tier; a tier whose key is revoked is cut off while the
other goes on.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from cluster.curve import ClientCert, make_client
from cluster.protocol import Reply, Request
from cluster.remote_web import HANDED_OUT, HOST_LOCAL, REFUSAL_ID, REFUSED_STATUS, apply_settings, web_settings
from tests.harness import ADMIN, ROOT, Cluster, EventClient, free_port, wait_until
from tests.netns import Link, Namespaces, netns_refusal
from tests.test_remote import (
    REFUSAL_DEADLINE_S,
    HostProcess,
    add_key,
    assert_refused,
    free_port_block,
    keys,
    refused_key,
    remote_primaries,
)

pytest.importorskip("moto.server")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
PREFIX = "media"
WEB_MODULE = "workers.web.remote"


# --- settings ------------------------------------------------------------------------------

def test_the_primary_hands_out_settings_never_a_credential_nor_what_belongs_to_the_web_host() -> None:
    from cluster.config import ClusterConfig

    primary = ClusterConfig(max_upload_mb=7, allowed_origins="https://app.example", storage="s3://b/p",
                            metrics_token="secret", forwarded_allow_ips="10.0.0.1", port=9000,
                            pipeline=("web=resize:width=320:height=240,hls",))
    sent = json.loads(json.dumps(web_settings(primary)))
    assert "metrics_token" not in sent and not set(sent) & set(HOST_LOCAL)
    host = ClusterConfig(port=8080, metrics_token="mine", forwarded_allow_ips="10.9.9.9")
    merged = apply_settings(host, {**sent, "metrics_token": "stolen", "port": 1})
    assert (merged.max_upload_mb, merged.allowed_origins, merged.storage) == (7, "https://app.example", "s3://b/p")
    assert (merged.port, merged.metrics_token, merged.forwarded_allow_ips) == (8080, "mine", "10.9.9.9")
    assert list(merged.pipelines) == ["web"], "the named pipelines an upload may start"
    for bad in ({"max_upload_mb": "lots"}, {"pipeline": "web=hls"}, {"pipeline": [1]}):
        with pytest.raises(ValueError):
            apply_settings(host, bad)


def test_every_setting_a_web_worker_reads_is_either_handed_out_or_its_hosts_own() -> None:
    import re

    read = set()
    for path in [*(ROOT / "workers" / "web").glob("*.py"), ROOT / "cluster" / "storage.py",
                 ROOT / "cluster" / "s3_storage.py"]:
        read |= set(re.findall(r"config\.([a-z_0-9]+)\b(?!\()", path.read_text()))
    read = {"pipeline" if name == "pipelines" else name for name in read}  # the property parses the option
    from cluster.config import ClusterConfig

    fields = {f for f in ClusterConfig.__dataclass_fields__}
    unclassified = (read & fields) - set(HANDED_OUT) - set(HOST_LOCAL)
    assert not unclassified, f"say in cluster/remote_web.py whether the primary hands these out: {unclassified}"


# --- the primary's side of remote web workers, with fake frames ---------------------------------

class FakeFrame:
    """What the TCP control socket receives: a body, and the key and address its connection proved."""

    def __init__(self, request: Request, key: str) -> None:
        self.bytes = request.encode()
        self._properties = {"User-Id": key, "Peer-Address": "10.0.0.5"}

    def get(self, name: str) -> str:
        return self._properties[name]


def _answer(server: Any, request: Request, key: str) -> Reply:
    """The control server's reply to one frame from web worker w1, answered at once."""
    frame = server.answer_frame(b"w1", FakeFrame(request, key))
    assert frame is not None, "answered at once, not by a coroutine"
    return Reply.decode(frame)


def test_a_remote_web_worker_is_known_by_its_connection_never_by_a_pid_of_ours() -> None:
    from primary.rate_limits import WebSocketCounts
    from primary.remote_web import RemoteControlServer, RemoteWebWorkers

    sent: list[list[bytes]] = []

    class Sent:
        send_multipart = sent.append

    counts = WebSocketCounts(max_per_user=1)
    workers = RemoteWebWorkers({"max_upload_mb": 7}, 10.0, counts.forget_worker)
    authorised = {"KEY"}
    server = RemoteControlServer(Sent(), workers, authorised.__contains__, counts.handlers())  # type: ignore[arg-type]
    user = {"userId": "u1"}
    local_pid = os.getpid()
    counts.open({"pid": local_pid, "user": {"userId": "u2"}})  # a local worker's client
    hello = _answer(server, Request(1, "web_hello", {"pid": local_pid, "host": {
        "hostname": "web-host-1", "pid": local_pid}}), "KEY")
    assert hello.result == {"max_upload_mb": 7}
    opened = _answer(server, Request(2, "ws_open", {"pid": local_pid, "user": user}), "KEY")
    assert opened.status == 200
    _answer(server, Request(3, "worker_ready", {"pid": local_pid, "host": {
        "hostname": "web-host-1", "pid": local_pid, "usage": {"rssBytes": 5}}}), "KEY")
    assert workers.processes() == [{"role": "web", "pid": local_pid, "serving": True, "remote": True,
                                    "hostname": "web-host-1", "address": "10.0.0.5", "rssBytes": 5}]
    counts.forget_worker(local_pid)  # the local worker exits: the remote one's count stays
    assert counts.count("u1") == 1
    authorised.clear()  # as the key watcher does, before it tells the control server
    server.revoke({"KEY"})
    assert counts.count("u1") == 0 and workers.processes() == []
    assert Reply.decode(sent[-1][1]) == Reply(REFUSAL_ID, error="the key of this web tier is revoked",
                                              status=REFUSED_STATUS) and sent[-1][0] == b"w1"
    again = _answer(server, Request(4, "last_seq", {}), "KEY")
    assert again.status == REFUSED_STATUS


# --- the primary's TCP sockets check keys on every message, over loopback ---------------------

class Peer:
    """A remote process's sockets, by hand: a control DEALER and an events SUB with a key file's CURVE keys."""

    def __init__(self, endpoint: str, cert: Path) -> None:
        host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
        self.context = zmq.Context()
        self.cert = ClientCert.load(cert)
        self.control = self._socket(zmq.DEALER, f"tcp://{host}:{int(port) + 2}")
        self.events = self.context.socket(zmq.SUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.setsockopt(zmq.SUBSCRIBE, b"")
        make_client(self.events, self.cert)
        self.monitor = self.events.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self.events.connect(f"tcp://{host}:{int(port) + 1}")

    def _socket(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        make_client(sock, self.cert)
        sock.connect(endpoint)
        return sock

    def call(self, op: str, request_id: int) -> list[Reply]:
        """What came until this request's reply (notices the primary sent before it included), within 10 s."""
        self.control.send(Request(request_id, op, {}).encode())
        replies: list[Reply] = []
        deadline = time.monotonic() + 10
        while request_id not in {r.id for r in replies} and self.control.poll(max(0, deadline - time.monotonic())
                                                                              * 1000):
            replies.append(Reply.decode(self.control.recv()))
        return replies

    def event_kinds(self, until: int, timeout_s: float = 15.0) -> list[int]:
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while until not in seen and time.monotonic() < deadline:
            if self.monitor.poll(100):
                seen.append(recv_monitor_message(self.monitor)["event"])
        return seen

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
def remote_primary(cluster_factory: Callable[..., Cluster]) -> Callable[..., tuple[Cluster, str]]:
    return functools.partial(remote_primaries(cluster_factory), workers=1)


def test_a_revoked_key_is_refused_on_its_open_control_connection_and_its_event_connection_dropped(
        remote_primary: Callable[..., tuple[Cluster, str]]) -> None:
    cluster, endpoint = remote_primary()
    peer = Peer(endpoint, add_key(cluster.data_dir, "by-hand"))
    try:
        assert peer.event_kinds(until=zmq.EVENT_HANDSHAKE_SUCCEEDED)[-1] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        answered = peer.call("last_seq", 1)
        assert [(r.id, r.status) for r in answered] == [(1, 200)]
        assert keys(cluster.data_dir, "revoke", "by-hand").returncode == 0
        kinds = peer.event_kinds(until=zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        assert zmq.EVENT_DISCONNECTED in kinds, "the open event connection is closed"
        assert kinds[-1] == zmq.EVENT_HANDSHAKE_FAILED_AUTH, "and the key refused when it comes back"
        refused = peer.call("last_seq", 2)  # the same control connection, made before the revocation
        assert {(r.id, r.status) for r in refused} == {(2, REFUSED_STATUS), (REFUSAL_ID, REFUSED_STATUS)}
        assert all(r.result is None for r in refused)
    finally:
        peer.close()


# --- web hosts ------------------------------------------------------------------------------

class WebHost(HostProcess):
    """``run_cluster.py web``."""

    module = WEB_MODULE

    def __init__(self, primary: str, cert: Path, log_path: Path, host: str, port: int, workers: int = 2,
                 prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(["web", "--primary", primary, "--cert", str(cert), "--host", host, "--port", str(port),
                          "--workers", str(workers), "--data-dir", str(log_path.parent / f"{log_path.stem}-data")],
                         log_path, prefix, env)
        self.url = f"http://{host}:{port}"

    def worker_pids(self) -> list[int]:
        return self.child_pids()


@pytest.fixture
def web_hosts(tmp_path: Path) -> Iterator[Callable[..., WebHost]]:
    made: list[WebHost] = []

    def make(primary: str, cert: Path, **kwargs: Any) -> WebHost:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", free_port())
        host = WebHost(primary, cert, tmp_path / f"web{len(made)}.log", **kwargs)
        made.append(host)
        return host.start()

    yield make
    for host in made:
        host.stop()
        _kill_group(host)


def _kill_group(host: WebHost) -> None:
    """Its workers, should a test have left any (they die with the host anyway)."""
    if host.process is not None:
        try:
            os.killpg(host.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def remote_web(cluster: Cluster) -> list[dict[str, Any]]:
    try:
        return [p for p in cluster.health()["processes"] if p.get("remote") and p["role"] == "web"]
    except (httpx.HTTPError, ValueError):
        return []


@pytest.mark.parametrize("case", ["revoked", "another primary"])
def test_a_refused_web_tier_says_why_and_exits_non_zero(case: str, tmp_path: Path,
                                                        remote_primary: Callable[..., tuple[Cluster, str]],
                                                        web_hosts: Callable[..., WebHost]) -> None:
    cluster, endpoint = remote_primary()  # refused at the handshake, before the storage matters
    cert, expected = refused_key(case, cluster.data_dir, tmp_path / "elsewhere")
    assert_refused(web_hosts(endpoint, cert, workers=1), expected)
    assert remote_web(cluster) == []


def test_a_web_tier_is_refused_by_a_primary_whose_media_is_on_its_own_disk(
        remote_primary: Callable[..., tuple[Cluster, str]], web_hosts: Callable[..., WebHost]) -> None:
    cluster, endpoint = remote_primary()
    host = web_hosts(endpoint, add_key(cluster.data_dir, "tier"), workers=1)
    assert_refused(host, "needs shared storage")
    assert "--storage s3://" in host.output()
    assert remote_web(cluster) == []


# --- two web tiers on two hosts behind HAProxy ------------------------------------------------

HAPROXY_CONFIG = """
global
    maxconn 512
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend lb
    bind 127.0.0.1:{port}
    default_backend tiers
backend tiers
    balance roundrobin
    http-response set-header X-Served-By %s
    use-server a if {{ req.hdr(x-tier) -m str a }}
    use-server b if {{ req.hdr(x-tier) -m str b }}
    server a {a}
    server b {b}
"""


class Site:
    """The primary and moto's S3 on the root host; web tiers a and b on two namespaces; HAProxy in front."""

    def __init__(self, namespaces: Namespaces, root: Path) -> None:
        self.namespaces, self.root = namespaces, root
        self.s3_server: Any = None
        self.s3: Any = None
        self.cluster: Cluster | None = None
        self.tiers: dict[str, WebHost] = {}
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> Site:
        from moto.server import ThreadedMotoServer

        namespaces, root = self.namespaces, self.root
        self.links: list[Link] = [namespaces.make(), namespaces.make()]
        home = self.links[0].root_ip  # the primary's address; the other host is routed to it
        self.links[1].reach(self.links[0])
        self.s3_server = ThreadedMotoServer(ip_address=home, port=0, verbose=False)
        self.s3_server.start()
        self.s3_url = f"http://{home}:{self.s3_server.get_host_and_port()[1]}"
        self.s3 = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1", aws_access_key_id="testing",
                               aws_secret_access_key="testing")
        self.bucket = f"web-{uuid.uuid4().hex[:10]}"
        self.s3.create_bucket(Bucket=self.bucket)
        port = free_port_block()
        self.endpoint = f"tcp://{home}:{port}"
        self.cluster = cluster = Cluster(root / "data", workers=1, executors=1, env=CREDENTIALS, extra=[
            "--remote-bind", self.endpoint, "--storage", f"s3://{self.bucket}/{PREFIX}",
            "--s3-endpoint", self.s3_url, "--scratch-dir", str(root / "scratch")])
        cluster.start()
        self.web_port = free_port()
        for name, link in zip("ab", self.links, strict=True):
            cert = add_key(self.cluster.data_dir, f"tier-{name}")
            self.tiers[name] = WebHost(self.endpoint, cert, root / f"tier-{name}.log", link.ns_ip, self.web_port,
                                       prefix=link.exec_prefix(), env=CREDENTIALS).start()
        wait_until(lambda: len(remote_web(self.cluster)) == 4, 60, "both tiers' workers to serve")
        self.lb_port = free_port()
        config = root / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.lb_port, a=f"{self.links[0].ns_ip}:{self.web_port}",
                                                b=f"{self.links[1].ns_ip}:{self.web_port}"))
        with (root / "haproxy.log").open("wb") as log:
            self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                            stderr=log)
        wait_until(self._lb_answers, 20, "HAProxy to answer")
        self.token = self.login()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def _lb_answers(self) -> bool:
        try:
            return httpx.get(self.url + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, tier: str) -> httpx.Client:
        """Through the load balancer, pinned to one tier (HAProxy's use-server on X-Tier)."""
        headers = {"X-Tier": tier, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def login(self) -> str:
        with self.client("a") as client:
            response = client.post("/api/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert response.status_code == 200 and response.headers["x-served-by"] == "a", response.text
        return response.json()["token"]

    def ws(self, tier: str, since: int | None = None) -> EventClient:
        return EventClient(f"ws://127.0.0.1:{self.lb_port}/ws", self.token, since, headers={"X-Tier": tier})

    def objects(self, prefix: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{PREFIX}/{prefix}")
        return [o["Key"] for o in listed.get("Contents", [])]

    def close(self) -> None:
        for host in self.tiers.values():
            host.stop()
            _kill_group(host)
        if self.haproxy is not None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(10)
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster.kill_leftovers()
        if self.s3 is not None:
            listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
            if listed:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
            self.s3.close()
        if self.s3_server is not None:
            self.s3_server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = netns_refusal()
    if reason:
        pytest.skip(reason)
    if shutil.which("haproxy") is None:
        pytest.skip("no haproxy (make haproxy installs Debian's)")
    namespaces = Namespaces()
    made = Site(namespaces, tmp_path_factory.mktemp("site"))
    try:
        yield made.start()
    finally:
        try:
            made.close()
        finally:
            namespaces.cleanup()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_web_tiers_behind_haproxy_serve_one_cluster(site: Site, clip: Path) -> None:
    listed = remote_web(site.cluster)
    assert sorted(p["address"] for p in listed) == sorted([site.links[0].ns_ip] * 2 + [site.links[1].ns_ip] * 2)
    metrics = httpx.get(site.cluster.url + "/metrics", headers=site.cluster.operator_headers, timeout=10).text
    for p in listed:
        assert f'vc_process_resident_bytes{{role="web",pid="{p["pid"]}",host="{p["hostname"]}",' \
               f'address="{p["address"]}"}}' in metrics
    listener = site.ws("b")  # the other tier
    try:
        with site.client("a") as client:
            uploaded = client.post("/api/upload-video", content=clip.read_bytes(), headers={"filename": clip.name})
            assert uploaded.status_code == 201 and uploaded.headers["x-served-by"] == "a", uploaded.text
            video_id = uploaded.json()["videoId"]
            assert f"{PREFIX}/{video_id}/original.mp4" in site.objects(video_id), "the upload went to S3"
            submitted = client.put("/api/video/resize", json={"videoId": video_id, "width": 160, "height": 120})
            assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["jobId"]
        completed = listener.wait_event("job:completed", job_id, timeout_s=90)
        with site.client("b") as client:
            download = client.get(completed["data"]["result"]["url"])
            assert download.status_code == 302 and download.headers["x-served-by"] == "b"
            location = download.headers["location"]
            assert location.startswith(site.s3_url) and "Signature" in location
            body = httpx.get(location, timeout=30)
            assert body.status_code == 200 and body.content[4:8] == b"ftyp"
        last_seq = max(m["seq"] for m in listener.messages if "seq" in m)
    finally:
        listener.close()
    with site.client("b") as client:  # while no WebSocket listens
        missed = client.put("/api/video/resize", json={"videoId": video_id, "width": 96, "height": 72}).json()
    wait_until(lambda: _state(site, missed["jobId"]) == "completed", 90, "the second job to complete")
    resumed = site.ws("a", since=last_seq)  # back, on the first tier, from where it was
    try:
        resumed.wait_event("job:completed", missed["jobId"], timeout_s=30)
        assert not resumed.events(job_id, "job:completed"), "nothing from before the resume point again"
    finally:
        resumed.close()


def _state(site: Site, job_id: str) -> str | None:
    with site.client("a") as client:
        response = client.get(f"/api/jobs/{job_id}")
    return response.json().get("state") if response.status_code == 200 else None


@pytest.mark.timeout(300)
def test_a_killed_web_worker_is_replaced_by_its_host_and_the_tiers_rejoin_a_restarted_primary(site: Site) -> None:
    host = site.tiers["a"]
    before = host.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: len(host.worker_pids()) == 2 and before[0] not in host.worker_pids(), 30,
               "the host to replace its killed worker")
    wait_until(lambda: {p["pid"] for p in remote_web(site.cluster) if p["address"] == site.links[0].ns_ip}
               == set(host.worker_pids()), 30, "the replacement to be listed, the dead one not")
    site.cluster.stop()
    site.cluster.start()
    wait_until(lambda: len(remote_web(site.cluster)) == 4, 60, "both tiers to rejoin by themselves")
    assert all(tier.process is not None and tier.process.poll() is None for tier in site.tiers.values())
    with site.client("b") as client:
        assert client.get("/api/videos").status_code == 200, "the session outlived the restart"


@pytest.mark.timeout(300)
def test_a_web_tier_cut_off_is_forgotten_then_serves_again_once_healed(site: Site, clip: Path) -> None:
    link, host = site.links[1], site.tiers["b"]
    pids = set(host.worker_pids())
    listener = site.ws("b")  # its TCP connections outlive the cut (retransmits; no ping of ours meanwhile)
    link.cut()
    try:
        wait_until(lambda: {p["address"] for p in remote_web(site.cluster)} == {site.links[0].ns_ip}, 30,
                   "the primary to forget the silent tier")
    finally:
        link.heal()
    wait_until(lambda: {p["pid"] for p in remote_web(site.cluster) if p["address"] == link.ns_ip} == pids, 30,
               "the same workers to be listed again, by themselves")
    assert set(host.worker_pids()) == pids, "none respawned"
    try:
        with site.client("a") as client:
            video_id = client.post("/api/upload-video", content=clip.read_bytes(),
                                   headers={"filename": clip.name}).json()["videoId"]
            job_id = client.put("/api/video/resize", json={"videoId": video_id, "width": 64, "height": 48}
                                ).json()["jobId"]
        listener.wait_event("job:completed", job_id, timeout_s=90)
        with site.client("b") as client:
            assert client.get(f"/api/jobs/{job_id}").status_code == 200
    finally:
        listener.close()


@pytest.mark.timeout(300)
def test_a_revoked_web_tier_is_cut_off_while_the_other_goes_on(site: Site, clip: Path) -> None:
    staying = site.ws("a")  # connected before the revocation: its tier's event connection is remade under it
    leaving = site.ws("b")
    try:
        assert keys(site.cluster.data_dir, "revoke", "tier-b").returncode == 0
        code = site.tiers["b"].wait(REFUSAL_DEADLINE_S)
        assert code != 0 and "revoked" in site.tiers["b"].output(), site.tiers["b"].output()[-2000:]
        assert leaving.closed.wait(5), "its WebSocket clients were cut off"
        wait_until(lambda: {p["address"] for p in remote_web(site.cluster)} == {site.links[0].ns_ip}, 20,
                   "the primary to list tier a only")
        with site.client("a") as client:
            video_id = client.post("/api/upload-video", content=clip.read_bytes(),
                                   headers={"filename": clip.name}).json()["videoId"]
            job_id = client.put("/api/video/resize", json={"videoId": video_id, "width": 96, "height": 72}
                                ).json()["jobId"]
        staying.wait_event("job:completed", job_id, timeout_s=90)
    finally:
        staying.close()
        leaving.close()


@pytest.mark.timeout(120)
def test_sigterm_drains_a_web_host_its_websockets_told_to_reconnect(site: Site) -> None:
    tier = next(t for t in site.tiers.values() if t.process is not None and t.process.poll() is None)
    name = next(n for n, t in site.tiers.items() if t is tier)
    client = site.ws(name)
    try:
        client.wait_for(lambda messages: bool(messages), 10, "the WebSocket's first message")
        assert tier.process is not None
        tier.process.send_signal(signal.SIGTERM)
        assert tier.wait(30) == 0
        assert client.closed.wait(5) and client.connection.close_code == 1012
    finally:
        client.close()
