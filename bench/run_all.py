"""Run every benchmark in a subprocess of its own and print a summary.

Benchmarks report, tests assert: a missed target prints FAIL but the exit code stays 0. The exit code is 1
only if a benchmark could not run to the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("http_bench.py", "events_bench.py", "job_bench.py", "hls_bench.py", "encode_bench.py", "webhook_bench.py",
              "fairness_bench.py")
BENCH_TIMEOUT_S = 600
STOP_GRACE_S = 60
BUSY_WARNING_PERCENT = 10


def run_benchmark(script: str, summary: Path) -> str:
    """The benchmark's summary line, prefixed PASS or FAIL; ERROR if it did not finish."""
    print(f"\n=== {script} ===", flush=True)
    process = subprocess.Popen([sys.executable, str(BENCH_DIR / script), "--summary-json", str(summary)])
    try:
        code = process.wait(BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.terminate()  # the benchmark stops what it started on SIGTERM
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return f"ERROR {script}: not finished within {BENCH_TIMEOUT_S} s"
    if code != 0 or not summary.exists():
        return f"ERROR {script}: exited with code {code}"
    result = json.loads(summary.read_text())
    return f"{'PASS' if result['passed'] else 'FAIL'}  {result['line']}"


def machine_state() -> str:
    """Other work on the machine skews every figure: say how busy it is before we start."""
    busy = psutil.cpu_percent(interval=1.0)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    warning = "  WARNING: the machine is busy, figures will be low" if busy > BUSY_WARNING_PERCENT else ""
    return f"{os.cpu_count()} CPUs, {busy:.0f}% busy over 1 s before the start, load average {load}{warning}"


def main() -> int:
    print(machine_state(), flush=True)
    with tempfile.TemporaryDirectory(prefix="vc-bench-") as tmp:
        lines = [run_benchmark(script, Path(tmp) / f"{script}.json") for script in BENCHMARKS]
    print("\n=== summary ===")
    for line in lines:
        print(line)
    return 1 if any(line.startswith("ERROR") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
