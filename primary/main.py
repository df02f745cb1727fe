"""The primary: owns the queue and the store, publishes events, supervises the children."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from cluster.child import EXIT_BOOT_FAILURE
from cluster.config import ClusterConfig
from cluster.curve import CertError
from cluster.heap import release_free_memory
from cluster.kinds import KINDS
from cluster.logs import configure_logging, get_logger
from cluster.passwords import random_password
from cluster.remote_web import web_settings
from cluster.storage import StorageSettings, check_storage, open_storage
from primary import permissions
from primary.accounts import AccountStore
from primary.auth_ops import AuthOps
from primary.control import ControlServer
from primary.dispatch import ExecutorPool
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.job_ops import Caller, JobOps
from primary.limits import LoginFailures
from primary.listener import bind_listener
from primary.metrics import JobMetrics, LoopLag, MetricsOps
from primary.pipeline_ops import PipelineConfigError, PipelineOps, check_named
from primary.pipeline_retention import PipelineRetention, pipeline_keep_rules
from primary.pipeline_store import PipelineReads
from primary.pipelines import Pipelines
from primary.queue_ops import QueueOps
from primary.rate_limits import RateLimits, WebSocketCounts, limit_keys
from primary.remote_access import RemoteAccess
from primary.remote_events import RemoteEvents
from primary.remote_web import RemoteControlServer, RemoteWebWorkers
from primary.retention import Retention, in_batches, keep_rules
from primary.retry import RetryPolicy, RetryTracker, parse_policies
from primary.run_files import RunFiles
from primary.session_events import SessionNotices
from primary.stats import WindowStats
from primary.store import DELETE_BATCH, JobStore, ReadStore
from primary.supervisor import Child, ChildSpec, Supervisor
from primary.type_gates import parse_concurrency
from primary.webhook_ops import WebhookOps
from primary.webhook_store import WebhookStore
from primary.webhooks import WebhookDispatcher, WebhookSettings
from primary.worker_registry import WorkerRegistry

log = get_logger()

PRUNE_INTERVAL_S = 60.0
CHECKPOINT_INTERVAL_S = 1.0
CHILD_STOP_TIMEOUT_S = 5.0
WATCH_INTERVAL_S = 0.5
ADMIN_NAME = "admin"


class AlreadyRunning(RuntimeError):
    pass


@dataclass
class _Parts:
    """What ``Primary._build`` makes, for ``_serve`` to run and ``_close`` to take down."""

    lock: int  # the run dir's lock file
    listener: socket.socket
    context: zmq.asyncio.Context
    store: JobStore
    reads: ReadStore
    accounts: AccountStore
    webhook_store: WebhookStore
    bus: EventBus
    engine: JobEngine
    webhooks: WebhookDispatcher
    pool: ExecutorPool
    supervisor: Supervisor
    executor_socket: zmq.asyncio.Socket
    logs: zmq.asyncio.Socket
    control: ControlServer
    remote: _Remote | None
    loop_lag: LoopLag
    pipelines: Pipelines
    files: RunFiles


class Primary:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._background: set[asyncio.Task[object]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        parts = self._build()
        await self._serve(parts)
        await self._stop.wait()
        await self._drain(parts.engine)
        log.info("cluster stopping")
        await self._close(parts)
        log.info("cluster stopped")
        return 0

    def _build(self) -> _Parts:
        """Every part, wired together; nothing runs yet."""
        config = self.config
        permissions.restrict(config)  # before anything is created, and before the store opens
        lock = _lock_run_dir(config.run_dir)
        listener = bind_listener(config.host, config.port)
        context = zmq.asyncio.Context()
        store = JobStore(config.db_path)
        bus = EventBus(zmq.Context.shadow(context.underlying), config.endpoint("events"), store.last_seq(),
                       config.pub_hwm)
        configure_logging("primary", config.log_level, config.log_format, sink=bus.publish_log)
        engine = JobEngine(store, bus, _retry_tracker(config))
        engine.gates.limits = parse_concurrency(config.job_policies, tuple(KINDS))
        job_metrics = JobMetrics(store.count_by_state_and_type())
        window = WindowStats()
        window.seed(store)
        engine.on_commit = lambda job, name: (job_metrics.observe(job, name), window.observe(job, name))
        reads = ReadStore(config.db_path)
        loop_lag = LoopLag()
        executor_socket = _bind(context, zmq.ROUTER, config.endpoint("executors"))
        supervisor = Supervisor(config, lambda child, code: self._child_exited(pool, child, code))
        files = RunFiles(open_storage(config), store.get_video)
        pool = ExecutorPool(executor_socket, engine, store.get_video, config.executor_timeout_s,
                            config.threads_per_ffmpeg, supervisor.kill, run_grace_s=config.job_stall_grace_s,
                            files=files,
                            welcome=_executor_settings(config))
        accounts = AccountStore(config.db_path)
        _ensure_an_administrator(accounts)
        processes = lambda: _describe_processes(supervisor, pool, registry, remote)
        rates = RateLimits.from_config(config)
        job_ops = JobOps(engine, store, processes, config.max_job_timeout_s, config.max_queued_jobs_per_user,
                         reads=reads, window=window, max_job_work=config.max_job_work,
                         job_tokens=lambda user, ip: rates.take("job", *limit_keys(user, ip)))
        pipelines = Pipelines(engine, store, PipelineReads(store.writer))
        job_ops.on_video_deleted = pipelines.forget_video
        store.on_jobs_deleted = pipelines.jobs_removed  # a failed pipeline whose dead job goes fails for good
        pipeline_ops = PipelineOps(pipelines, job_ops, config.pipelines)
        auth_ops = AuthOps(accounts, LoginFailures.from_config(config),
                           config.session_ttl_s, rates, SessionNotices(bus, store))
        registry = WorkerRegistry(config.worker_timeout_s, config.worker_boot_timeout_s)
        registry.on_recycle = self._recycle
        self._ws_counts = WebSocketCounts(config.max_ws_per_user)
        webhook_store = WebhookStore(config.db_path)
        webhooks = WebhookDispatcher(webhook_store, _webhook_settings(config), store.events_since,
                                     lambda user_id: accounts.user_by_id(user_id) is not None)
        webhook_ops = WebhookOps(webhooks, lambda: bus.last_seq, config.webhook_max_per_user)
        metrics = MetricsOps(job_metrics, engine, lambda: {**registry.stats, **(remote.web_stats if remote else {})},
                             lambda: supervisor.restarts, processes,
                             counts=store.count_by_state, loop_lag=loop_lag, sources=[webhooks.render_metrics])
        control_socket = _bind(context, zmq.ROUTER, config.endpoint("control"))
        logs = _bind(context, zmq.PULL, config.endpoint("logs"))
        handler_maps = (job_ops.handlers(), auth_ops.handlers(), registry.handlers(), {"reload": self._reload_request},
                        rates.handlers(), self._ws_counts.handlers(), metrics.handlers(), webhook_ops.handlers(),
                        pipeline_ops.handlers(), QueueOps(engine, store, job_ops).handlers())
        control = ControlServer(control_socket, *handler_maps, batch=engine.batch)
        remote = _listen_remote(context, config, pool, bus, handler_maps, engine.batch, self._ws_counts)
        self._supervisor, self._pool, self._registry = supervisor, pool, registry
        return _Parts(lock, listener, context, store, reads, accounts, webhook_store, bus, engine, webhooks, pool,
                      supervisor, executor_socket, logs, control, remote, loop_lag, pipelines, files)

    async def _serve(self, parts: _Parts) -> None:
        """Recover, start the loops, then the children."""
        config, store = self.config, parts.store
        parts.webhooks.catch_up()  # before any new event: deliveries a kill cut off are written first
        parts.bus.subscribers.append(parts.webhooks.on_event)
        parts.webhooks.start()
        parts.engine.recover()
        parts.pipelines.recover()  # after the jobs: each live pipeline is checked against its stage's job
        gc.freeze()  # what recovery loaded lives on: the collector need not walk a million queued jobs again
        release_free_memory()  # the rows recovery read and dropped
        store.checkpoint_elsewhere()
        swept = parts.files.sweep_at_start()  # no child runs yet
        if swept:
            log.info("removed partial files", count=swept)
        pool, remote = parts.pool, parts.remote
        self._tasks = [asyncio.create_task(coro) for coro in (
            parts.control.serve(), pool.serve(), pool.watch_heartbeats(), _forward_logs(parts.logs, parts.bus),
            _prune_events(store, config.event_retention, config.event_retention_s), _prune_sessions(parts.accounts),
            self._watch_workers(),
            parts.loop_lag.run(), _checkpoint(store),
            Retention(store, keep_rules(config),
                      also=[PipelineRetention(parts.engine, pipeline_keep_rules(config)).sweep]).run(),
            parts.files.sweep_forever(lambda run_id: parts.engine.job_for_run(run_id) is not None,
                                      config.s3_run_sweep_s),
            *(remote.serve() if remote else ()),
        )]
        self._install_signal_handlers()
        await parts.supervisor.start(ChildSpec("web", "workers.web", (parts.listener.fileno(),)), config.workers)
        await parts.supervisor.start(ChildSpec("executor", "workers.executor"), config.executors)
        log.info("cluster started", port=config.port, workers=config.workers, executors=config.executors)

    async def _close(self, parts: _Parts) -> None:
        """The children first, then the loops, then the parts, about in the reverse order they were made."""
        await parts.supervisor.stop(CHILD_STOP_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await parts.pool.close()
        await parts.files.close()
        await parts.webhooks.close()
        # a cancelled task's asyncio.to_thread work goes on (a WAL checkpoint, a long read): a SQLite connection
        # closed under a thread that uses it is a SIGSEGV, so every such thread ends before the stores close
        await asyncio.get_running_loop().shutdown_default_executor()
        parts.engine.close()
        parts.listener.close()
        for sock in (parts.executor_socket, parts.logs):
            sock.close(linger=0)
        if parts.remote:
            parts.remote.close()
        parts.control.close()
        parts.bus.close()
        parts.context.term()
        parts.reads.close()
        parts.store.close()
        parts.accounts.close()
        parts.webhook_store.close()
        _release_run_dir(self.config.run_dir, parts.lock)

    async def _drain(self, engine: JobEngine) -> None:
        """New jobs get 503 and nothing new starts; running jobs get the grace period to finish.
        Whatever is still running then is interrupted and runs again at the next start."""
        engine.draining = True
        deadline = time.monotonic() + self.config.shutdown_grace_s
        if engine.running:
            log.info("waiting for running jobs", running=engine.running, graceS=self.config.shutdown_grace_s)
        while engine.running and time.monotonic() < deadline and not self._force.is_set():
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._force.wait(), 0.05)

    def _on_stop_signal(self) -> None:
        if self._stop.is_set():
            self._force.set()  # a second Ctrl-C: stop now
        self._stop.set()

    def _child_exited(self, pool: ExecutorPool, child: Child, code: int) -> None:
        self._registry.forget(child.pid)
        self._ws_counts.forget_worker(child.pid)
        if child.spec.role == "executor":
            pool.lose_pid(child.pid, "executor lost: process exited" if code != EXIT_BOOT_FAILURE
                          else "executor failed to boot")

    def _install_signal_handlers(self) -> None:
        """Handlers only enqueue; the work runs as tasks on the loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal)
        actions = {
            signal.SIGHUP: self._reload,
            signal.SIGTTIN: lambda: self._supervisor.add("web"),
            signal.SIGTTOU: self._remove_web_worker,
            signal.SIGUSR1: lambda: self._supervisor.add("executor"),
            signal.SIGUSR2: self._remove_executor,
        }
        for sig, action in actions.items():
            loop.add_signal_handler(sig, self._spawn_task, action)

    def _spawn_task(self, action: Callable[[], Awaitable[object] | None]) -> None:
        if self._stop.is_set():
            return
        result = action()
        if asyncio.iscoroutine(result):
            task = asyncio.create_task(result)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # operations on the children

    async def _reload(self) -> bool:
        """Roll the web workers over one at a time; one reload at a time."""
        if self._reloading.locked():
            log.warning("a reload is running already")
            return False
        async with self._reloading:
            log.info("reload: rolling the web workers over")
            done = await self._supervisor.roll(self._supervisor.children("web"), self._registry.wait_ready)
            log.info("reload finished" if done else "reload stopped: the old workers keep serving")
            return done

    def _reload_request(self, args: dict[str, object]) -> dict[str, object]:
        Caller(args).require_admin()
        self._spawn_task(self._reload)
        return {"reloading": True}

    def _recycle(self, pid: int, reason: str) -> None:
        child = next((c for c in self._supervisor.children("web") if c.pid == pid), None)
        if child is None or self._stop.is_set():
            return
        log.info("recycling a web worker", child_pid=pid, reason=reason)
        self._spawn_task(lambda: self._supervisor.roll([child], self._registry.wait_ready))

    def _remove_web_worker(self) -> None:
        child = self._supervisor.remove("web")
        if child is not None:
            self._supervisor.retire(child)  # it drains: in-flight requests finish, WebSockets are told 1012

    def _remove_executor(self) -> None:
        """The idlest executor goes; one that runs a job finishes it first."""
        child = self._supervisor.remove("executor", self._pool.idlest)
        if child is not None:
            self._pool.retire(child.pid, lambda: self._supervisor.retire(child))

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            for pid in self._registry.stale():
                log.error("web worker stopped answering: killing it", child_pid=pid,
                          timeoutS=self.config.worker_timeout_s)
                self._registry.forget(pid)
                self._supervisor.kill(pid)


def _ensure_an_administrator(accounts: AccountStore) -> None:
    """No default password: a fresh data dir gets an administrator with a random one, shown once."""
    if accounts.count_users():
        return
    password = random_password()
    accounts.add_user(ADMIN_NAME, password, is_admin=True)
    print(f"\n  created the administrator {ADMIN_NAME!r} with the password: {password}\n"
          f"  (shown once; change it with: python run_cluster.py user passwd {ADMIN_NAME})\n", file=sys.stderr,
          flush=True)


def _retry_tracker(config: ClusterConfig) -> RetryTracker:
    default = RetryPolicy(config.max_retries, config.retry_initial_ms, timeout_s=config.job_timeout_s)
    return RetryTracker(default, parse_policies(config.job_policies, default))


def _webhook_settings(config: ClusterConfig) -> WebhookSettings:
    return WebhookSettings(config.webhook_max_attempts, config.webhook_retry_initial_ms, config.webhook_timeout_s,
                           config.webhook_allow_private)


def _describe_processes(supervisor: Supervisor, pool: ExecutorPool, registry: WorkerRegistry,
                        remote: _Remote | None) -> list[dict[str, object]]:
    """The live processes; an executor is ``joined`` once it has said hello to the pool, a web worker
    ``serving`` once it has said it serves. Remote executors follow, with their host (their pid is one
    of that host)."""
    joined = {state.pid for state in pool.executors.values() if not state.remote}
    local = []
    for process in supervisor.processes():
        if process["role"] == "executor":
            process = {**process, "joined": process["pid"] in joined}
        elif process["role"] == "web":
            process = {**process, "serving": registry.serving(process["pid"])}
        local.append(process)
    return [*local, *pool.remote_processes(), *(remote.web.processes() if remote else ())]


def _executor_settings(config: ClusterConfig) -> dict[str, object]:
    """What a remote executor takes from us at hello; never a credential. ffmpegThreads 0: the remote host
    sizes ffmpeg for its own CPUs. Storage: S3's bucket and prefix (each host has its own credentials), or
    this host's directory, which a remote executor then needs mounted."""
    settings = StorageSettings.from_config(config)
    storage = settings.to_dict() if settings.kind == "s3" else {"kind": "local",
                                                                "root": str(config.storage_dir.resolve())}
    return {"heartbeatIntervalS": config.heartbeat_interval_s, "executorTimeoutS": config.executor_timeout_s,
            "ffmpegThreads": config.ffmpeg_threads, "logLevel": config.log_level, "storage": storage}


class _Remote:
    """What ``--remote-bind`` adds: the authenticator, the TCP sockets of remote executors, web tiers and their
    logs, the key watcher. A revoked key is cut off on every one of them at once."""

    def __init__(self, access: RemoteAccess, pool: ExecutorPool, events: RemoteEvents, sockets: _RemoteSockets,
                 web: RemoteWebWorkers, control: RemoteControlServer, publish_log: Callable[[bytes], None]) -> None:
        self.access, self.pool, self.events, self.sockets = access, pool, events, sockets
        self.web, self.control, self._publish_log = web, control, publish_log
        self._drops: set[asyncio.Task[None]] = set()
        access.on_revoked = self._revoked

    @property
    def web_stats(self) -> dict[int, dict[str, object]]:
        return self.web.stats

    def serve(self) -> tuple[Awaitable[None], ...]:
        return (self.pool.serve_remote(self.sockets.executors, self.access.authorised), self.access.watch(),
                self.control.serve(), self.web.watch(), self.access.forward_logs(self.sockets.logs, self._publish_log))

    def _revoked(self, keys: set[str]) -> None:
        self.pool.revoke(keys)
        self.control.revoke(keys)
        task = asyncio.create_task(self.events.reopen())  # a PUB cannot refuse: all its connections go
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    def close(self) -> None:
        for task in self._drops:
            task.cancel()
        self.control.close()
        self.events.close()
        for sock in (self.sockets.executors, self.sockets.logs):
            sock.close(linger=0)
        self.access.close()


@dataclass
class _RemoteSockets:
    executors: zmq.asyncio.Socket
    logs: zmq.asyncio.Socket


def _listen_remote(context: zmq.asyncio.Context, config: ClusterConfig, pool: ExecutorPool, bus: EventBus,
                   handler_maps: tuple[Mapping[str, Any], ...], batch: Callable[[], Any],
                   ws_counts: WebSocketCounts) -> _Remote | None:
    """Remote processes have sockets of their own: each message's key is checked on the executor, control and
    log sockets, and the event socket can be closed on a revocation without touching the local ones."""
    if not config.remote_bind:
        return None
    access = RemoteAccess(context, config)
    sockets = _RemoteSockets(_socket(context, zmq.ROUTER), _socket(context, zmq.PULL))
    control_socket = _socket(context, zmq.ROUTER)
    control_socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a web worker that reconnects keeps its identity
    events = RemoteEvents(zmq.Context.shadow(context.underlying), access, config.pub_hwm)
    bus.subscribers.append(events.on_event)
    bound = [access.bind(sockets.executors, "executors"), events.endpoint, access.bind(control_socket, "control"),
             access.bind(sockets.logs, "logs")]
    log.info("listening for remote processes (CurveZMQ)", endpoints=bound, serverKey=access.server_public)
    web = RemoteWebWorkers(web_settings(config) if config.storage else None, config.worker_timeout_s,
                           ws_counts.forget_worker)
    control = RemoteControlServer(control_socket, web, access.authorised, *handler_maps, batch=batch)
    return _Remote(access, pool, events, sockets, web, control, bus.publish_log)


def _socket(context: zmq.asyncio.Context, kind: int) -> zmq.asyncio.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _bind(context: zmq.asyncio.Context, kind: int, endpoint: str) -> zmq.asyncio.Socket:
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if kind == zmq.PULL:
        sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(endpoint)
    return sock


async def _forward_logs(pull: zmq.asyncio.Socket, bus: EventBus) -> None:
    while True:
        bus.publish_log(await pull.recv())


async def _checkpoint(store: JobStore) -> None:
    while True:
        await asyncio.sleep(CHECKPOINT_INTERVAL_S)
        await asyncio.to_thread(store.checkpoint)


async def _prune_events(store: JobStore, keep: int, max_age_s: float) -> None:
    while True:
        await in_batches(lambda: store.prune_events(keep, time.time() * 1000 - max_age_s * 1000, DELETE_BATCH))
        await asyncio.sleep(PRUNE_INTERVAL_S)


async def _prune_sessions(accounts: AccountStore) -> None:
    """Expired sessions would otherwise stay in the table for good, one row per login."""
    while True:
        removed = accounts.prune_sessions()  # through the expiry index: a few rows at a time
        if removed:
            log.info("expired sessions removed", count=removed)
        await asyncio.sleep(PRUNE_INTERVAL_S)


def _lock_run_dir(run_dir: Path) -> int:
    """One primary per data dir: a second one would fight over the store and the sockets."""
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)
    fd = os.open(run_dir / "primary.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        os.close(fd)
        raise AlreadyRunning(f"another primary is running on {run_dir.parent}") from e
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    for stale in run_dir.glob("*.ipc"):  # left by a primary that was killed
        stale.unlink()
    return fd


def _release_run_dir(run_dir: Path, fd: int) -> None:
    for path in run_dir.glob("*.ipc"):
        with suppress(FileNotFoundError):
            path.unlink()
    with suppress(FileNotFoundError):
        (run_dir / "primary.lock").unlink()
    os.close(fd)


def run_primary(config: ClusterConfig) -> int:
    configure_logging("primary", config.log_level, config.log_format)
    try:
        check_named(config.pipelines)
    except PipelineConfigError as e:
        log.error("cannot start", error=str(e))
        return 1
    try:
        check_storage(config)  # a bucket that cannot be used is said now, not by a failing job later
    except RuntimeError as e:  # cluster.s3_storage.StorageUnavailable
        log.error("cannot start: the storage is unavailable", error=str(e))
        return 1
    try:
        return asyncio.run(Primary(config).run())
    except (AlreadyRunning, CertError) as e:
        log.error(str(e))
        return 1
    except (OSError, zmq.ZMQError) as e:  # a port in use, say
        log.error("cannot start", error=str(e))
        return 1
