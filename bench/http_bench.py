"""HTTP throughput: GET /api/health on the cluster against a bare Starlette app, both on 2 uvicorn workers.

Both servers run side by side on free loopback ports; wrk measures them alternately (baseline, cluster,
baseline, cluster), each run after a warm-up, and the best run of each side counts.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from baseline_app import BODY_BYTES_ENV
from harness import (
    PYTHON,
    ROOT,
    bench_arguments,
    free_port,
    running_cluster,
    running_server,
    verdict,
    write_summary,
)

HEALTH_PATH = "/api/health"
WORKERS = 2
THREADS = 2
CONNECTIONS = 64
DURATION_S = 10
WARMUP_S = 2
ROUNDS = 2
TARGET_RATIO = 0.8
LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    latency_ms: float
    errors: int


def wrk(url: str, duration_s: int) -> WrkResult:
    args = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s}s", url]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration_s + 30).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    latency = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE)
    if rps is None or latency is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad_status = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = socket_errors + (int(bad_status.group(1)) if bad_status else 0)
    return WrkResult(float(rps.group(1)), float(latency.group(1)) * LATENCY_UNITS_MS[latency.group(2)], errors)


def measure(url: str) -> WrkResult:
    wrk(url, WARMUP_S)
    return wrk(url, DURATION_S)


def best(results: list[WrkResult]) -> WrkResult:
    return max(results, key=lambda r: r.rps)


def baseline_args(port: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "baseline_app:app", "--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(WORKERS), "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning"]


def health_body_size(base_url: str) -> int:
    response = httpx.get(base_url + HEALTH_PATH, timeout=5.0, trust_env=False)
    response.raise_for_status()
    return len(response.content)


def run(tmp: Path) -> tuple[WrkResult, WrkResult, int]:
    """Best baseline run, best cluster run, and the health body size both served."""
    with running_cluster(WORKERS, executors=0) as cluster:
        size = health_body_size(cluster.url)
        port = free_port()
        with running_server(baseline_args(port), f"http://127.0.0.1:{port}", tmp / "baseline.log",
                            env={BODY_BYTES_ENV: str(size)}) as baseline:
            baseline_size = health_body_size(baseline.url)
            if baseline_size != size:
                raise RuntimeError(f"baseline body is {baseline_size} bytes, the cluster's {size}")
            runs: dict[str, list[WrkResult]] = {"baseline": [], "cluster": []}
            for _ in range(ROUNDS):
                for name, server in (("baseline", baseline), ("cluster", cluster)):
                    result = measure(server.url + HEALTH_PATH)
                    print(f"  {name:8} {result.rps:10.0f} req/s  mean latency {result.latency_ms:6.2f} ms"
                          f"  errors {result.errors}", flush=True)
                    runs[name].append(result)
    return best(runs["baseline"]), best(runs["cluster"]), size


def report(baseline: WrkResult, cluster: WrkResult, size: int) -> tuple[bool, str]:
    ratio = cluster.rps / baseline.rps
    passed = ratio >= TARGET_RATIO and cluster.errors == 0
    print(f"\nGET {HEALTH_PATH} ({size}-byte body), wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION_S}s, "
          f"{WORKERS} uvicorn workers each, best of {ROUNDS}")
    print(f"{'':22}{'baseline':>12}{'cluster':>12}")
    print(f"{'requests/s':22}{baseline.rps:12.0f}{cluster.rps:12.0f}")
    print(f"{'mean latency (ms)':22}{baseline.latency_ms:12.2f}{cluster.latency_ms:12.2f}")
    print(f"{'errors':22}{baseline.errors:12d}{cluster.errors:12d}")
    print(f"{'ratio cluster/baseline':22}{ratio:24.3f}")
    print(f"{'target':22}{'>= ' + str(TARGET_RATIO):>24}")
    print(f"{'result':22}{verdict(passed):>24}")
    line = (f"http: {cluster.rps:.0f} req/s vs baseline {baseline.rps:.0f} req/s, ratio {ratio:.3f} "
            f"(target >= {TARGET_RATIO})")
    return passed, line


def main() -> int:
    args = bench_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="vc-bench-http-") as tmp:
        baseline, cluster, size = run(Path(tmp))
    passed, line = report(baseline, cluster, size)
    write_summary(args.summary_json, "http", passed, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
