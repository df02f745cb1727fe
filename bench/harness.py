"""What both benchmarks share: free ports, a cluster or server in its own process group, clean stops."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 4000
ADMIN_NAME = "bench"


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that every `finally` runs and stops what the benchmark started."""
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> None:
    """Lift the soft limit on open files to `wanted` (at most the hard limit); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


@contextlib.contextmanager
def running_server(args: Sequence[str], url: str, log_path: Path, env: dict[str, str] | None = None,
                   health_path: str = "/api/health") -> Iterator[Server]:
    """Start `args` in a new process group, wait until `health_path` answers 200, stop it on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    server = Server(url, process, log_path)
    try:
        _wait_healthy(server, url + health_path)
        yield server
    except BaseException:
        print(f"--- log of {args[1:3]} ---\n{log_tail(log_path)}", file=sys.stderr)
        raise
    finally:
        stop_process(process)


@dataclass(frozen=True)
class Cluster:
    server: Server
    token: str  # an administrator's session: sees every job's events

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def running_cluster(workers: int, executors: int, extra_args: Sequence[str] = ()) -> Iterator[Cluster]:
    """The cluster on a free port with a temporary data dir (removed afterwards), logged in as an administrator."""
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        data_dir, password = Path(tmp) / "data", secrets.token_urlsafe(16)
        add_administrator(data_dir, password)
        port = free_port()
        args = [PYTHON, "run_cluster.py", "--port", str(port), "--data-dir", str(data_dir),
                "--workers", str(workers), "--executors", str(executors), "--log-level", "warning", *extra_args]
        with running_server(args, f"http://127.0.0.1:{port}", Path(tmp) / "cluster.log") as server:
            yield Cluster(server, login(server.url, password))


def add_administrator(data_dir: Path, password: str) -> None:
    """Before the first start, so that the cluster creates no administrator of its own."""
    add_user(data_dir, ADMIN_NAME, password, admin=True)


def add_user(data_dir: Path, name: str, password: str, admin: bool = False) -> None:
    subprocess.run([PYTHON, "run_cluster.py", "user", "--data-dir", str(data_dir), "add", name, "--password-stdin",
                    *(["--admin"] if admin else [])], cwd=ROOT, input=password + "\n", text=True, check=True,
                   capture_output=True, timeout=START_TIMEOUT_S)


def login(base_url: str, password: str) -> str:
    response = httpx.post(base_url + "/api/login", json={"username": ADMIN_NAME, "password": password},
                          timeout=10.0, trust_env=False)
    response.raise_for_status()
    return response.json()["token"]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process, wait, then SIGKILL its whole process group (it leads one of its own)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"pid {process.pid} ignored SIGTERM for {STOP_GRACE_S} s: killing it", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the leader if still there, and any child left behind
    process.wait(STOP_GRACE_S)


def log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    return ""


def write_summary(path: Path | None, name: str, passed: bool, line: str) -> None:
    """The one-line verdict run_all.py collects."""
    if path is not None:
        path.write_text(json.dumps({"name": name, "passed": passed, "line": line}))


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _wait_healthy(server: Server, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with code {server.process.returncode} before serving")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {START_TIMEOUT_S} s")


def bench_arguments(description: str | None) -> argparse.Namespace:
    """Every benchmark's start: stop cleanly on SIGTERM, take --summary-json for run_all.py."""
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--summary-json", type=Path, help="write the verdict here (for run_all.py)")
    return parser.parse_args()
