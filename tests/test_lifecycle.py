"""Starting, configuring and stopping the cluster (items 1, 10, 12)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from cluster.config import ClusterConfig, env_name
from tests.harness import ROOT, Cluster


def test_help_documents_every_flag_and_its_environment_variable() -> None:
    out = subprocess.run([sys.executable, "run_cluster.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    for field in dataclasses.fields(ClusterConfig):
        assert "--" + field.name.replace("_", "-") in out
        assert env_name(field.name) in out


def test_flags_choose_the_number_of_processes(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=3, executors=2)
    roles = [p["role"] for p in cluster.health()["processes"]]
    assert sorted(roles) == ["executor", "executor", "primary", "web", "web", "web"]


def test_web_workers_run_below_the_primary_s_cpu_priority(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(workers=2, executors=1, extra=["--web-nice", "3"])
    niceness = {p["pid"]: (p["role"], psutil.Process(p["pid"]).nice()) for p in cluster.health()["processes"]}
    primary = next(nice for role, nice in niceness.values() if role == "primary")
    assert sorted(role_nice for role_nice in niceness.values() if role_nice[0] != "primary") == [
        ("executor", primary), ("web", primary + 3), ("web", primary + 3)]


def test_a_web_nice_out_of_range_is_refused(tmp_path: Path) -> None:
    answer = subprocess.run([sys.executable, "run_cluster.py", "--data-dir", str(tmp_path / "data"), "--web-nice",
                             "20"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert answer.returncode != 0
    assert "--web-nice must be from 0 to 19" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_environment_variables_set_flags(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data", workers=1, executors=0)
    port = cluster.port
    cluster.args = ["--data-dir", str(cluster.data_dir), "--executors", "0"]
    cluster.env.update({env_name("port"): str(port), env_name("workers"): "1"})
    try:
        cluster.start()
        assert [p["role"] for p in cluster.health()["processes"]] == ["primary", "web"]
    finally:
        cluster.stop()


def test_health_lists_queue_counts_and_live_processes(cluster: Cluster) -> None:
    health = cluster.health()
    assert health["status"] == "ok"
    assert set(health["queue"]) >= {"queued", "running", "delayed", "completed", "dead", "cancelled"}
    pids = {p["pid"] for p in health["processes"]}
    assert cluster.process is not None and cluster.process.pid in pids
    for pid in pids:
        assert os.path.exists(f"/proc/{pid}")


def test_sigterm_stops_everything_and_leaves_no_socket_file(cluster: Cluster) -> None:
    children = {p.pid for p in cluster.descendants()}
    assert set(cluster.pids("web") + cluster.pids("executor")) <= children
    assert cluster.stop(signal.SIGTERM) == 0
    assert cluster.leftovers() == []
    assert list((cluster.data_dir / "run").iterdir()) == []


def test_ctrl_c_stops_everything(cluster: Cluster) -> None:
    assert cluster.process is not None
    cluster.send_signal(signal.SIGCONT)  # records the pids
    os.killpg(cluster.process.pid, signal.SIGINT)  # Ctrl-C at a terminal signals the whole process group
    assert cluster.process.wait(20) == 0
    assert cluster.leftovers() == []


def test_a_second_primary_on_the_same_data_dir_refuses_to_start(cluster: Cluster) -> None:
    result = subprocess.run([sys.executable, "run_cluster.py", "--data-dir", str(cluster.data_dir), "--port",
                             str(cluster.port + 1 if cluster.port < 65535 else 1025), "--executors", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "another primary" in result.stderr
    assert cluster.health()["status"] == "ok"
