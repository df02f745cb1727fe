"""The primary: owns the queue and the store, publishes events, supervises the children."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

import zmq
import zmq.asyncio

from cluster.child import EXIT_BOOT_FAILURE
from cluster.config import ClusterConfig
from cluster.logs import configure_logging, get_logger
from cluster.passwords import random_password
from cluster.storage import check_storage, open_storage
from primary.accounts import AccountStore
from primary.auth_ops import AuthOps
from primary.control import ControlServer
from primary.dispatch import ExecutorPool
from primary.engine import JobEngine
from primary.event_bus import EventBus
from primary.job_ops import Caller, JobOps
from primary.limits import FailureLimiter
from primary.listener import bind_listener
from primary.metrics import JobMetrics, MetricsOps
from primary.rate_limits import RateLimits, WebSocketCounts
from primary.retry import RetryPolicy, RetryTracker, parse_policies
from primary.store import JobStore
from primary.supervisor import Child, ChildSpec, Supervisor
from primary.worker_registry import WorkerRegistry

log = get_logger()

PRUNE_INTERVAL_S = 60.0
CHILD_STOP_TIMEOUT_S = 5.0
WATCH_INTERVAL_S = 0.5
ADMIN_NAME = "admin"


class AlreadyRunning(RuntimeError):
    pass


class Primary:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._background: set[asyncio.Task[object]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        config = self.config
        lock = _lock_run_dir(config.run_dir)
        listener = bind_listener(config.host, config.port)
        context = zmq.asyncio.Context()
        store = JobStore(config.db_path)
        bus = EventBus(zmq.Context.shadow(context.underlying), config.endpoint("events"), store.last_seq(),
                       config.pub_hwm)
        configure_logging("primary", config.log_level, config.log_format, sink=bus.publish_log)
        engine = JobEngine(store, bus, _retry_tracker(config))
        job_metrics = JobMetrics(store.count_by_state_and_type())
        engine.on_commit = job_metrics.observe
        executor_socket = _bind(context, zmq.ROUTER, config.endpoint("executors"))
        supervisor = Supervisor(config, lambda child, code: self._child_exited(pool, child, code))
        pool = ExecutorPool(executor_socket, engine, store.get_video, config.executor_timeout_s,
                            config.threads_per_ffmpeg, supervisor.kill, run_grace_s=config.job_stall_grace_s)
        accounts = AccountStore(config.db_path)
        _ensure_an_administrator(accounts)
        processes = lambda: _describe_processes(supervisor, pool)
        job_ops = JobOps(engine, store, processes, config.max_job_timeout_s, config.max_queued_jobs_per_user)
        rates = RateLimits.from_config(config)
        auth_ops = AuthOps(accounts, FailureLimiter(config.login_max_failures, config.login_window_s),
                           config.session_ttl_s, rates)
        registry = WorkerRegistry(config.worker_timeout_s, config.worker_boot_timeout_s)
        registry.on_recycle = self._recycle
        self._ws_counts = WebSocketCounts(config.max_ws_per_user)
        metrics = MetricsOps(job_metrics, engine, lambda: registry.stats, lambda: supervisor.restarts, processes)
        control = ControlServer(_bind(context, zmq.ROUTER, config.endpoint("control")), job_ops.handlers(),
                                auth_ops.handlers(), registry.handlers(), {"reload": self._reload_request},
                                rates.handlers(), self._ws_counts.handlers(), metrics.handlers())
        self._supervisor, self._pool, self._registry = supervisor, pool, registry
        logs = _bind(context, zmq.PULL, config.endpoint("logs"))
        engine.recover()
        swept = open_storage(config).sweep_partials()  # no child runs yet
        if swept:
            log.info("removed partial files", count=swept)
        self._tasks = [asyncio.create_task(coro) for coro in (
            control.serve(), pool.serve(), pool.watch_heartbeats(), _forward_logs(logs, bus),
            _prune_events(store, config.event_retention, config.event_retention_s), self._watch_workers(),
        )]
        self._install_signal_handlers()
        await supervisor.start(ChildSpec("web", "workers.web", (listener.fileno(),)), config.workers)
        await supervisor.start(ChildSpec("executor", "workers.executor"), config.executors)
        log.info("cluster started", port=config.port, workers=config.workers, executors=config.executors)
        await self._stop.wait()
        await self._drain(engine)
        log.info("cluster stopping")
        await supervisor.stop(CHILD_STOP_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        engine.close()
        listener.close()
        for sock in (executor_socket, logs):
            sock.close(linger=0)
        control.close()
        bus.close()
        context.term()
        store.close()
        accounts.close()
        _release_run_dir(config.run_dir, lock)
        log.info("cluster stopped")
        return 0

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


def _describe_processes(supervisor: Supervisor, pool: ExecutorPool) -> list[dict[str, object]]:
    """The live processes; an executor is ``joined`` once it has said hello to the pool."""
    joined = {state.pid for state in pool.executors.values()}
    return [{**p, "joined": p["pid"] in joined} if p["role"] == "executor" else p for p in supervisor.processes()]


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


async def _prune_events(store: JobStore, keep: int, max_age_s: float) -> None:
    while True:
        store.prune_events(keep, time.time() * 1000 - max_age_s * 1000)
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
        check_storage(config)  # a bucket that cannot be used is said now, not by a failing job later
    except RuntimeError as e:  # cluster.s3_storage.StorageUnavailable
        log.error("cannot start: the storage is unavailable", error=str(e))
        return 1
    try:
        return asyncio.run(Primary(config).run())
    except AlreadyRunning as e:
        log.error(str(e))
        return 1
    except OSError as e:
        log.error("cannot start", error=str(e))
        return 1
