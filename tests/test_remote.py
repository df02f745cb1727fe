"""Remote executors over CurveZMQ: keys, refusals, and faults between hosts made of network namespaces.

Over loopback TCP: ``keys add/list/revoke``, refused keys (unknown, revoked, another primary's), a remote
executor that works and is listed with its host. In namespaces (skipped where ``ip netns`` is not
permitted): a remote host's executor killed, stopped and resumed, its link cut and healed, its key revoked,
and the primary restarted, each with a stream of jobs; after each, every job completes once with one set of
outputs, no run-scoped partial file is left and no ffmpeg runs for a dead run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import psutil
import pytest
import zmq

from cluster.protocol import ExecutorMessage, Priority
from cluster.storage import LocalStorage
from primary.dispatch import ExecutorPool
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.retry import RetryPolicy, RetryTracker
from primary.run_files import RunFiles
from primary.store import JobStore
from tests.harness import ROOT, Cluster, wait_until
from tests.netns import Link, Namespaces, netns_refusal

REMOTE_MODULE = "workers.executor.remote"
REFUSAL_DEADLINE_S = 15.0
JOB_TIMEOUT_S = 120.0


# --- helpers ---------------------------------------------------------------------------

def free_port_block(count: int = 4) -> int:
    """A port P with P..P+count-1 all free on every address."""
    for _ in range(100):
        base = random.randint(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


def keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "run_cluster.py"), "keys", "--data-dir", str(data_dir), *args],
                          check=False, capture_output=True, text=True, timeout=30, cwd=ROOT)


def add_key(data_dir: Path, name: str) -> Path:
    out = data_dir.parent / f"{data_dir.name}-{name}.cert"
    result = keys(data_dir, "add", name, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


class HostProcess:
    """A ``run_cluster.py`` host command (``executor``, ``web``) as an operator starts it on another host
    (optionally in a namespace): a session of its own, its output in a log file; its children run ``module``."""

    module = ""

    def __init__(self, command: list[str], log_path: Path, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = [*(prefix or []), sys.executable, str(ROOT / "run_cluster.py"), *command, "--log-format",
                     "console"]
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env={**os.environ, **(self.env or {})})
        return self

    def child_pids(self) -> list[int]:
        """The host's own children (a grandchild forked a moment ago still shows its parent's command line)."""
        assert self.process is not None
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [p.pid for p in children if _cmdline_has(p, self.module)]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


class RemoteHost(HostProcess):
    """``run_cluster.py executor``."""

    module = REMOTE_MODULE

    def __init__(self, primary: str, cert: Path, log_path: Path, executors: int = 1,
                 prefix: list[str] | None = None) -> None:
        super().__init__(["executor", "--primary", primary, "--cert", str(cert), "--executors", str(executors)],
                         log_path, prefix)
        self.seen: set[int] = set()

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update(p.pid for p in found)
        return found

    def executor_pids(self) -> list[int]:
        return self.child_pids()

    def ffmpeg(self) -> list[psutil.Process]:
        return [p for p in self.descendants() if _is_running_ffmpeg(p)]

    def stop(self) -> None:
        if self.process is None:
            return
        self.descendants()
        super().stop()
        for pid in self.seen:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def _cmdline_has(process: psutil.Process, text: str) -> bool:
    try:
        return text in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _is_running_ffmpeg(process: psutil.Process) -> bool:
    try:
        return "ffmpeg" in process.name() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def job_events(cluster: Cluster) -> list[tuple[str, dict[str, Any]]]:
    """Every job event in the store, in order (it outlives a primary's restart, unlike a WebSocket)."""
    db = sqlite3.connect(f"file:{cluster.data_dir / 'cluster.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT event, data FROM events WHERE event LIKE 'job:%' ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(name, json.loads(data)) for name, data in rows]


def remote_processes(cluster: Cluster) -> list[dict[str, Any]]:
    try:
        return [p for p in cluster.health()["processes"] if p.get("remote")]
    except (httpx.HTTPError, ValueError):
        return []


def wait_joined(cluster: Cluster, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    def joined() -> list[dict[str, Any]] | None:
        found = remote_processes(cluster)
        return found if len(found) == count else None

    return wait_until(joined, timeout_s, f"{count} remote executors to join")


def job_state(cluster: Cluster, job_id: str) -> str | None:
    try:
        return cluster.job(job_id)["state"]
    except (httpx.HTTPError, AssertionError, ValueError):
        return None  # the primary is restarting


def running_on(cluster: Cluster, job_id: str) -> int | None:
    """The remote pid of the executor running the job, once it runs."""
    try:
        job = cluster.job(job_id)
    except (httpx.HTTPError, AssertionError):
        return None
    if job["state"] != "running" or not job.get("executor") or job.get("progress", 0) <= 0:
        return None
    return int(str(job["executor"]).split("-")[-2])  # executor-<hostname>-<pid>-<random>


def submit_stream(cluster: Cluster, video_id: str, sizes: list[tuple[int, int]]) -> list[str]:
    return [cluster.resize(video_id, w, h).json()["jobId"] for w, h in sizes]


def assert_each_job_once(cluster: Cluster, video_id: str, job_ids: list[str], sizes: list[tuple[int, int]],
                         hosts: list[RemoteHost]) -> None:
    wait_until(lambda: all(job_state(cluster, j) == "completed" for j in job_ids), JOB_TIMEOUT_S,
               "every job to complete")
    events = job_events(cluster)
    for job_id in job_ids:
        completed = [e for name, e in events if name == "job:completed" and e["jobId"] == job_id]
        assert len(completed) == 1, f"{job_id} completed {len(completed)} times"
    video_dir = cluster.data_dir / "storage" / video_id
    storage = cluster.data_dir / "storage"

    def settled() -> bool:
        no_ffmpeg = not any(host.ffmpeg() for host in hosts)
        return no_ffmpeg and not [p for p in storage.rglob("*.part")]

    wait_until(settled, 20, "no ffmpeg for a dead run and no run-scoped partial file")
    expected = {"original.mp4", "thumbnail.jpg", *(f"{w}x{h}.mp4" for w, h in sizes)}
    assert {p.name for p in video_dir.iterdir()} == expected, "one set of outputs, nothing else"
    for w, h in sizes:
        assert (video_dir / f"{w}x{h}.mp4").stat().st_size > 0


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture
def host_factory(tmp_path: Path) -> Iterator[Callable[..., RemoteHost]]:
    hosts: list[RemoteHost] = []

    def make(primary: str, cert: Path, executors: int = 1, link: Link | None = None) -> RemoteHost:
        host = RemoteHost(primary, cert, tmp_path / f"host{len(hosts)}.log", executors,
                          link.exec_prefix() if link else None)
        hosts.append(host)
        return host.start()

    yield make
    for host in hosts:
        host.stop()


def remote_primaries(cluster_factory: Callable[..., Cluster]) -> Callable[..., tuple[Cluster, str]]:
    """``make(*extra, address=, **cluster)``: a cluster without local executors (unless ``executors``) that
    also listens on ``address`` (CurveZMQ); returns it and the endpoint remote processes connect to."""

    def make(*extra: str, address: str = "127.0.0.1", **kwargs: Any) -> tuple[Cluster, str]:
        endpoint = f"tcp://{address}:{free_port_block()}"
        kwargs.setdefault("executors", 0)
        return cluster_factory(extra=["--remote-bind", endpoint, *extra], **kwargs), endpoint

    return make


@pytest.fixture
def remote_cluster(cluster_factory: Callable[..., Cluster]) -> Callable[..., tuple[Cluster, str]]:
    return remote_primaries(cluster_factory)


def refused_key(case: str, data_dir: Path, elsewhere: Path) -> tuple[Path, str]:
    """A certificate the primary of ``data_dir`` refuses, and what its host then says: ``revoked``,
    ``unknown`` (the right primary's key, a key pair it never authorised), ``another primary``'s."""
    if case == "another primary":
        return add_key(elsewhere, "stranger"), "certificate is for another primary"  # for its primary's key
    cert = add_key(data_dir, "soon-gone")
    assert keys(data_dir, "revoke", "soon-gone").returncode == 0
    if case == "unknown":
        value = json.loads(cert.read_text())
        other = add_key(elsewhere, "x")
        value.update({k: json.loads(other.read_text())[k] for k in ("public", "secret")})
        cert.write_text(json.dumps(value))
    return cert, "unknown or revoked"


def assert_refused(host: HostProcess, expected: str) -> None:
    """The host exits non-zero within the refusal deadline, saying why."""
    code = host.wait(REFUSAL_DEADLINE_S + 5)  # + two interpreters' start (host, child) on a busy box
    assert code != 0 and expected in host.output(), host.output()


@pytest.fixture(scope="session")
def netns_reason() -> str | None:
    return netns_refusal()


@pytest.fixture
def namespaces(netns_reason: str | None) -> Iterator[Namespaces]:
    if netns_reason:
        pytest.skip(netns_reason)
    made = Namespaces()
    try:
        yield made
    finally:
        made.cleanup()


# --- fencing in the executor pool: a real engine and store, fake sockets --------------------

class FakeSocket:
    """Records what the pool sends to each executor identity."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, ExecutorMessage]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append((frames[0], ExecutorMessage.decode(frames[1])))

    def kinds(self, identity: bytes) -> list[str]:
        return [m.kind for i, m in self.sent if i == identity]

    def run_id(self, identity: bytes) -> str:
        return next(m.run_id for i, m in reversed(self.sent) if i == identity and m.kind == "run")


def test_the_pool_accepts_one_run_and_refuses_what_a_lost_run_sends_later(tmp_path: Path) -> None:
    context = zmq.Context()
    store = JobStore(tmp_path / "cluster.db")
    bus = EventBus(context, f"inproc://events-{os.getpid()}", store.last_seq())
    engine = JobEngine(store, bus, RetryTracker(RetryPolicy(initial_ms=10)))
    storage = LocalStorage(tmp_path / "storage")
    video = {"info": {"format": "mp4"}}
    killed: list[int] = []
    local, remote = FakeSocket(), FakeSocket()
    pool = ExecutorPool(local, engine, lambda _v: video, 60.0, 1, killed.append,
                        files=RunFiles(storage, lambda _v: video), welcome={"heartbeatIntervalS": 0.5})
    final = storage.resized("v1", 64, 48, "mp4")

    def join(identity: bytes, key: str) -> str:
        pool.handle(identity, ExecutorMessage("hello", payload={"pid": 7, "hostname": "h"}), remote, key, "10.0.0.2")
        pool.handle(identity, ExecutorMessage("ready"), remote, key)
        run_id = remote.run_id(identity)
        partial = storage.run_partial(final, run_id)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(identity.decode())  # what its ffmpeg wrote
        return run_id

    async def scenario() -> None:
        job, _ = engine.submit("resize", "v1", {"width": 64, "height": 48}, priority=Priority.NORMAL)
        run_a = join(b"a", "KEY-A")
        assert remote.kinds(b"a") == ["welcome", "run"] and remote.sent[0][1].payload == {"heartbeatIntervalS": 0.5}
        pool.lose(b"a", "executor lost: no heartbeat")  # a partition: a goes on, unseen
        assert killed == [], "a remote pid is never killed here"
        assert not storage.run_partial(final, run_a).exists(), "a lost run's files are removed"
        run_b = join(b"b", "KEY-B")
        late = storage.run_partial(final, run_a)
        late.write_text("a, late")  # a's ffmpeg went on writing after the partition
        pool.handle(b"a", ExecutorMessage("done", run_a, {"result": {"from": "a"}, "videoId": "v1"}), remote,
                    "KEY-A")
        assert not late.exists() and remote.kinds(b"a")[-1] == "rejoin"
        late.write_text("a, later still")
        pool.handle(b"a", ExecutorMessage("failed", run_a, {"error": "killed"}), remote, "KEY-A")
        assert not late.exists(), "a late report naming no video: its run's files are found under any video"
        pool.handle(b"b", ExecutorMessage("done", run_b, {"result": {"from": "b"}, "videoId": "v1"}), remote,
                    "KEY-B")
        await pool.settle()
        assert final.read_text() == "b" and not list(final.parent.glob(".*.part"))
        completed = [e.data for e in store.events_since(0) if e.event == "job:completed"]
        assert [(e["jobId"], e["result"]) for e in completed] == [(job.id, {"from": "b"})]
        pool.revoke({"KEY-B"})
        assert remote.kinds(b"b")[-2:] == ["refused", "rejoin"] and b"b" not in pool.executors

    try:
        asyncio.run(scenario())
    finally:
        engine.close()
        bus.close()
        store.close()
        context.term()


# --- keys and refusals over loopback -------------------------------------------------------

def test_keys_add_list_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cert_path = add_key(data_dir, "encoder-1")
    cert = json.loads(cert_path.read_text())
    server = json.loads((data_dir / "keys" / "server.key").read_text())
    assert cert["server_public"] == server["public"], "one file holds the primary's key too"
    assert {"name", "public", "secret", "server_public"} <= set(cert)
    for path in (cert_path, data_dir / "keys" / "server.key", data_dir / "keys" / "authorized" / "encoder-1.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((data_dir / "keys").stat().st_mode) == 0o700
    assert "secret" not in (data_dir / "keys" / "authorized" / "encoder-1.key").read_text()
    listed = keys(data_dir, "list")
    assert listed.returncode == 0 and listed.stdout.split() == ["encoder-1", cert["public"]]
    again = keys(data_dir, "add", "encoder-1", "--out", str(tmp_path / "other.cert"))
    assert again.returncode == 1 and "exists already" in again.stderr
    assert keys(data_dir, "add", "../evil").returncode == 1
    assert keys(data_dir, "revoke", "encoder-1").returncode == 0
    assert keys(data_dir, "list").stdout == ""
    gone = keys(data_dir, "revoke", "encoder-1")
    assert gone.returncode == 1 and "no key named" in gone.stderr


def test_remote_bind_takes_keys_and_binds_only_what_it_says(remote_cluster: Callable[..., tuple[Cluster, str]]
                                                            ) -> None:
    cluster, endpoint = remote_cluster()
    assert (cluster.data_dir / "keys" / "server.key").exists(), "the primary's key pair, made on first use"
    port = int(endpoint.rsplit(":", 1)[1])
    listening = {c.laddr.port for c in psutil.Process(cluster.process.pid).net_connections("tcp")  # type: ignore[union-attr]
                 if c.status == psutil.CONN_LISTEN}
    assert {port, port + 1, port + 2, port + 3} <= listening


@pytest.mark.parametrize("case", ["unknown", "revoked", "another primary"])
def test_a_refused_executor_says_why_and_exits_non_zero(case: str, tmp_path: Path,
                                                        remote_cluster: Callable[..., tuple[Cluster, str]],
                                                        host_factory: Callable[..., RemoteHost]) -> None:
    cluster, endpoint = remote_cluster()
    cert, expected = refused_key(case, cluster.data_dir, tmp_path / "elsewhere")
    assert_refused(host_factory(endpoint, cert, executors=1), expected)
    assert remote_processes(cluster) == []


def test_a_remote_executor_over_loopback_completes_jobs_and_is_listed_with_its_host(
        remote_cluster: Callable[..., tuple[Cluster, str]], host_factory: Callable[..., RemoteHost],
        clip: Path) -> None:
    cluster, endpoint = remote_cluster()
    host = host_factory(endpoint, add_key(cluster.data_dir, "loop"), executors=1)  # authorised while it runs
    joined = wait_joined(cluster, 1)
    assert joined[0]["hostname"] == socket.gethostname() and joined[0]["address"] == "127.0.0.1"
    assert joined[0]["pid"] in host.executor_pids()
    video_id = cluster.upload(clip)
    sizes = [(160, 120), (96, 72)]
    job_ids = submit_stream(cluster, video_id, sizes)
    assert_each_job_once(cluster, video_id, job_ids, sizes, [host])
    with cluster.client() as client:
        listed = client.get("/api/admin/processes").json()
        metrics = client.get("/metrics").text
    remote = [p for p in listed if p.get("remote")]
    assert [(p["role"], p["hostname"], p["address"]) for p in remote] == [("executor", socket.gethostname(),
                                                                            "127.0.0.1")]
    assert f'host="{socket.gethostname()}",address="127.0.0.1"' in metrics
    assert all(cluster.job(j)["executor"].startswith(f"executor-{socket.gethostname()}-") for j in job_ids)


def test_sigterm_on_a_remote_host_hands_its_job_back_at_once(remote_cluster: Callable[..., tuple[Cluster, str]],
                                                            host_factory: Callable[..., RemoteHost],
                                                            long_clip: Path) -> None:
    cluster, endpoint = remote_cluster()
    hosts = [host_factory(endpoint, add_key(cluster.data_dir, f"host-{i}"), executors=1) for i in range(2)]
    wait_joined(cluster, 2)
    video_id = cluster.upload(long_clip)
    sizes = [(320, 240)]
    job_ids = submit_stream(cluster, video_id, sizes)
    victim = wait_until(lambda: running_on(cluster, job_ids[0]), 60, "the job to run")
    leaving, staying = sorted(hosts, key=lambda host: victim not in host.executor_pids())
    ffmpeg = leaving.ffmpeg()
    assert ffmpeg and victim in leaving.executor_pids()
    assert leaving.process is not None
    leaving.process.send_signal(signal.SIGTERM)
    assert leaving.wait(20) == 0
    stalled = [e for name, e in job_events(cluster) if name == "job:stalled" and e["jobId"] == job_ids[0]]
    assert [e["reason"] for e in stalled] == ["executor left"], "told at once, not found silent later"
    assert not any(_is_running_ffmpeg(p) for p in ffmpeg)
    assert_each_job_once(cluster, video_id, job_ids, sizes, [staying])


# --- faults between hosts: network namespaces ---------------------------------------------

STREAM = [(320, 240), (160, 120), (128, 96)]


class RemoteSetup:
    """A primary in the root namespace, remote executor hosts in a namespace of their own, a stream of jobs."""

    def __init__(self, namespaces: Namespaces, remote_cluster: Callable[..., tuple[Cluster, str]],
                 host_factory: Callable[..., RemoteHost], executors: tuple[int, ...] = (2,)) -> None:
        self.link = namespaces.make()
        self.cluster, self.endpoint = remote_cluster(address=self.link.root_ip)
        self.certs = [add_key(self.cluster.data_dir, f"ns-host-{i}") for i in range(len(executors))]
        self.hosts = [host_factory(self.endpoint, cert, executors=n, link=self.link)
                      for cert, n in zip(self.certs, executors, strict=True)]
        joined = wait_joined(self.cluster, sum(executors))
        assert {p["address"] for p in joined} == {self.link.ns_ip}, "they joined over the namespace's link"
        self.cluster.executors = sum(executors)  # wait_ready, after a restart, waits for them to rejoin

    def start_stream(self, clip: Path) -> tuple[str, list[str], int]:
        """Upload, queue the jobs, and return the remote pid running the first one once it makes progress."""
        video_id = self.cluster.upload(clip)
        job_ids = submit_stream(self.cluster, video_id, STREAM)
        victim = wait_until(lambda: running_on(self.cluster, job_ids[0]), 60, "the first job to run")
        return video_id, job_ids, victim

    def stalled(self, job_id: str) -> bool:
        return any(name == "job:stalled" and e["jobId"] == job_id for name, e in job_events(self.cluster))

    def check(self, video_id: str, job_ids: list[str]) -> None:
        assert_each_job_once(self.cluster, video_id, job_ids, STREAM, self.hosts)


@pytest.fixture
def remote_setup(namespaces: Namespaces, remote_cluster: Callable[..., tuple[Cluster, str]],
                 host_factory: Callable[..., RemoteHost]) -> Callable[..., RemoteSetup]:
    return lambda executors=(2,): RemoteSetup(namespaces, remote_cluster, host_factory, executors)


@pytest.mark.timeout(300)
def test_a_killed_remote_executor_is_replaced_on_its_host_and_its_job_runs_once(
        remote_setup: Callable[..., RemoteSetup], long_clip: Path) -> None:
    setup = remote_setup()
    video_id, job_ids, victim = setup.start_stream(long_clip)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: setup.stalled(job_ids[0]), 30, "the primary to give the job up")
    setup.check(video_id, job_ids)
    def replaced() -> list[int] | None:
        pids = setup.hosts[0].executor_pids()
        return pids if len(pids) == 2 and victim not in pids else None

    respawned = wait_until(replaced, 30, "the host to replace the killed executor")
    wait_until(lambda: {p["pid"] for p in remote_processes(setup.cluster)} == set(respawned), 30,
               "the replacement to join")


@pytest.mark.timeout(300)
def test_a_stopped_then_resumed_executor_gives_its_run_up_and_joins_again(
        remote_setup: Callable[..., RemoteSetup], long_clip: Path) -> None:
    setup = remote_setup()
    video_id, job_ids, victim = setup.start_stream(long_clip)
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_until(lambda: setup.stalled(job_ids[0]), 30, "the primary to give the stopped executor's job up")
    finally:
        os.kill(victim, signal.SIGCONT)
    setup.check(video_id, job_ids)
    wait_until(lambda: victim in {p["pid"] for p in remote_processes(setup.cluster)}, 30,
               "the resumed executor to join again, by itself")


@pytest.mark.timeout(300)
def test_a_cut_link_longer_than_the_timeout_then_healed(remote_setup: Callable[..., RemoteSetup],
                                                        long_clip: Path) -> None:
    setup = remote_setup()
    before = sorted(setup.hosts[0].executor_pids())
    video_id, job_ids, _victim = setup.start_stream(long_clip)
    setup.link.cut()
    try:
        wait_until(lambda: setup.stalled(job_ids[0]), 30, "the primary to give the cut-off executors up")
        wait_until(lambda: not setup.hosts[0].ffmpeg(), 30, "the cut-off executors to kill their ffmpeg")
        # each executor is given up when its own heartbeats stop: the idle one may go a moment after the busy one
        wait_until(lambda: remote_processes(setup.cluster) == [], 30, "the primary to forget every cut-off executor")
    finally:
        setup.link.heal()
    setup.check(video_id, job_ids)
    wait_joined(setup.cluster, 2)
    assert sorted(setup.hosts[0].executor_pids()) == before, "the same processes joined again, none respawned"


@pytest.mark.timeout(300)
def test_a_key_revoked_mid_job_cuts_its_host_off_and_the_job_runs_elsewhere(
        remote_setup: Callable[..., RemoteSetup], long_clip: Path) -> None:
    setup = remote_setup(executors=(1, 1))
    video_id, job_ids, victim = setup.start_stream(long_clip)
    index = next(i for i, host in enumerate(setup.hosts) if victim in host.executor_pids())
    revoked = setup.hosts[index]
    assert keys(setup.cluster.data_dir, "revoke", f"ns-host-{index}").returncode == 0
    code = revoked.wait(REFUSAL_DEADLINE_S)
    assert code != 0 and "revoked" in revoked.output()
    setup.check(video_id, job_ids)
    others = {p["pid"] for p in remote_processes(setup.cluster)}
    assert others == set(setup.hosts[1 - index].executor_pids())
    assert all(str(victim) not in setup.cluster.job(j)["executor"].split("-") for j in job_ids)


@pytest.mark.timeout(300)
def test_remote_executors_rejoin_a_restarted_primary_by_themselves(remote_setup: Callable[..., RemoteSetup],
                                                                  long_clip: Path) -> None:
    setup = remote_setup()
    before = sorted(setup.hosts[0].executor_pids())
    video_id, job_ids, _victim = setup.start_stream(long_clip)
    setup.cluster.stop()
    setup.cluster.start()  # waits for both remote executors to be joined again
    setup.check(video_id, job_ids)
    assert sorted(setup.hosts[0].executor_pids()) == before, "the same processes, never respawned"
    assert setup.hosts[0].process is not None and setup.hosts[0].process.poll() is None
