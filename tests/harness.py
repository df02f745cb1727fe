"""Real clusters for tests: started as a user would, on a free port with a temp data dir."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
ADMIN = ("admin", "admin-password-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll a condition that no event announces (a process appearing or vanishing), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Cluster:
    def __init__(self, data_dir: Path, *, workers: int = 2, executors: int = 1, extra: list[str] | None = None,
                 port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.workers = workers
        self.executors = executors
        extra = extra or []
        self.args = [
            "--port", str(self.port), "--data-dir", str(data_dir), "--workers", str(workers),
            "--executors", str(executors), "--retry-initial-ms", "100", "--heartbeat-interval-s", "0.2",
            "--executor-timeout-s", "2", "--shutdown-grace-s", "5", *extra,
        ]
        # the operator's token, by environment so that it survives a test's own args: /api/health shows the
        # processes, and /metrics answers, with it (no login needed)
        self.metrics_token = extra[extra.index("--metrics-token") + 1] if "--metrics-token" in extra \
            else (env or {}).get("VC_METRICS_TOKEN") or secrets.token_hex(16)
        self.env = {**os.environ, "VC_METRICS_TOKEN": self.metrics_token, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-primary.log"
        self.known_pids: set[int] = set()
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def operator_headers(self) -> dict[str, str]:
        """The ``--metrics-token`` of a scraper or an operator: /metrics and the whole of /api/health."""
        return {"Authorization": f"Bearer {self.metrics_token}"}

    def start(self, as_admin: bool = True) -> Cluster:
        """Start the primary; ``as_admin``: create the harness's administrator first and log in as it."""
        if as_admin and not (self.data_dir / "cluster.db").exists():
            self.add_user(*ADMIN, admin=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.process = subprocess.Popen([sys.executable, str(ROOT / "run_cluster.py"), *self.args], cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)  # its own group, as at a terminal
        log.close()
        self.wait_ready()
        if as_admin:
            self.token = self.login(*ADMIN)
        return self

    def add_user(self, name: str, password: str, admin: bool = False) -> None:
        """As an operator would: ``run_cluster.py user add``."""
        command = [sys.executable, str(ROOT / "run_cluster.py"), "user", "--data-dir", str(self.data_dir), "add",
                   name, "--password-stdin", *(["--admin"] if admin else [])]
        subprocess.run(command, input=password + "\n", text=True, check=True, capture_output=True, timeout=30)

    def login(self, name: str, password: str) -> str:
        response = httpx.post(self.url + "/api/login", json={"username": name, "password": password}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def with_executors(self, executors: int) -> Cluster:
        """For the next start."""
        index = self.args.index("--executors")
        self.args[index + 1] = str(executors)
        self.executors = executors
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            self._check_alive()
            try:
                health = self.health(timeout_s=2)
            except (httpx.HTTPError, ValueError):
                return None
            if "processes" not in health:
                return None
            serving = [p for p in health["processes"]
                       if p["role"] == "web" and p.get("serving") and not p.get("remote")]  # remote tiers: their own
            if len(serving) == self.workers and len(self.executor_pids(health)) == self.executors:
                return health
            return None

        health = wait_until(ready, timeout_s, "the cluster to serve")
        self._remember_pids()
        return health

    def executor_pids(self, health: dict[str, Any] | None = None) -> list[int]:
        """Executors that have also joined the primary's pool (said hello), not just been spawned."""
        health = health or self.health()
        return [p["pid"] for p in health["processes"] if p["role"] == "executor" and p.get("joined")]

    def health(self, timeout_s: float = 5) -> dict[str, Any]:
        """The whole of /api/health (processes, queue), as the operator sees it; 503 while shutting down."""
        return httpx.get(self.url + "/api/health", timeout=timeout_s, headers=self.operator_headers).json()

    def pids(self, role: str) -> list[int]:
        return [p["pid"] for p in self.health()["processes"] if p["role"] == role]

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def ffmpeg_processes(self) -> list[psutil.Process]:
        return [p for p in self.descendants() if "ffmpeg" in p.name()]

    def _remember_pids(self) -> None:
        self.known_pids.update(p.pid for p in self.descendants())

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the primary exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self._remember_pids()
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Stop the primary; return its exit code. Kills anything it left behind."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.kill_leftovers()

    def kill_primary(self) -> None:
        self.send_signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def leftovers(self) -> list[psutil.Process]:
        alive = []
        for pid in self.known_pids:
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        return alive

    def kill_leftovers(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for process in self.leftovers():
            process.kill()

    # API helpers

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client logged in as the administrator, or with the given session token."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {token if token is not None else self.token}"})

    def upload(self, path: Path, name: str | None = None, token: str | None = None) -> str:
        """As the administrator, or as the holder of ``token``."""
        with self.client(token) as client:
            response = client.post("/api/upload-video", content=path.read_bytes(),
                                   headers={"filename": name or path.name})
        assert response.status_code == 201, response.text
        return response.json()["videoId"]

    def resize(self, video_id: str, width: int, height: int, token: str | None = None,
               **options: Any) -> httpx.Response:
        with self.client(token) as client:
            return client.put("/api/video/resize", json={"videoId": video_id, "width": width, "height": height,
                                                         **options})

    def convert(self, video_id: str, fmt: str, **options: Any) -> httpx.Response:
        with self.client() as client:
            return client.put("/api/video/convert", params={"videoId": video_id}, json={"format": fmt, **options})

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()


class EventClient:
    """A real WebSocket client; a reader thread collects every message it receives."""

    def __init__(self, url: str, token: str = "", since: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})} or None
        if since is not None:  # a resume in the URL: no timer on the server can race it
            url = f"{url}?since={since}"
        # no keepalive pings of its own: a test may stop the worker (SIGSTOP) for longer than a ping's timeout
        self._connector = connect(url, open_timeout=10, additional_headers=headers, ping_interval=None)
        self.connection: ClientConnection = self._connector.__enter__()
        self.messages: list[dict[str, Any]] = []
        self.closed: threading.Event = threading.Event()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for text in self.connection:
                with self._changed:
                    self.messages.append(json.loads(text))
                    self._changed.notify_all()
        except Exception:  # noqa: BLE001, S110 - the connection ended; tests look at self.closed
            pass
        finally:
            self.closed.set()
            with self._changed:
                self._changed.notify_all()

    def send(self, message: dict[str, Any]) -> None:
        self.connection.send(json.dumps(message))

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0,
                 what: str = "a message") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed.is_set():
                    raise TimeoutError(f"no {what} within {timeout_s} s; got {[m.get('event') for m in self.messages]}")
                self._changed.wait(remaining)
            return list(self.messages)

    def events(self, job_id: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """The events received, in order; of one job, and of one name, if given."""
        with self._changed:
            return [m for m in self.messages if "event" in m and (name is None or m["event"] == name)
                    and (job_id is None or m["data"].get("jobId") == job_id)]

    def wait_event(self, name: str, job_id: str, timeout_s: float = 30.0, count: int = 1) -> dict[str, Any]:
        """The ``count``-th ``name`` event of the job, once received."""
        def seen(messages: list[dict[str, Any]]) -> bool:
            return sum(m.get("event") == name and m["data"].get("jobId") == job_id for m in messages) >= count

        self.wait_for(seen, timeout_s, f"{name} #{count} for {job_id}")
        return self.events(job_id, name)[count - 1]

    def close(self) -> None:
        self._connector.__exit__(None, None, None)
        self._reader.join(5)


def generate_clip(path: Path, seconds: float = 2, size: str = "320x240", audio: bool = True) -> Path:
    from cluster.media import find_ffmpeg

    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac", "-shortest"] if audio else []
    subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *inputs, *codecs, str(path)],
                   check=True, timeout=120)
    return path


class ResumingClient:
    """A WebSocket client that, like the pages, reconnects after a drop and resumes from its last seq."""

    RECONNECT_DELAY_S = 0.1

    def __init__(self, url: str, token: str = "") -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.seqs: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self.close_codes: list[int | None] = []
        self.last_error = ""
        self._stop = threading.Event()
        self._connection: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.url, open_timeout=5, additional_headers=self.headers) as connection:
                    self._connection = connection
                    connection.send(json.dumps({"type": "resume", "since": self.seqs[-1] if self.seqs else 0}))
                    try:
                        for text in connection:
                            message = json.loads(text)
                            if "seq" in message:
                                self.seqs.append(message["seq"])
                                self.events.append(message)
                    finally:
                        self.close_codes.append(connection.close_code)
            except Exception as e:  # noqa: BLE001 - refused, reset or closed: reconnect as a page would
                self.last_error = repr(e)
            if not self._stop.is_set():
                self.reconnects += 1
                self._stop.wait(self.RECONNECT_DELAY_S)

    def final_states(self) -> dict[str, str]:
        finals = {"job:completed", "job:permanent-failure", "job:cancelled"}
        return {e["data"]["jobId"]: e["event"] for e in self.events if e["event"] in finals}

    def close(self) -> None:
        self._stop.set()
        if self._connection is not None:
            self._connection.close()
        self._thread.join(10)
