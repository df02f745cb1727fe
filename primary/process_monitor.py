"""CPU and memory of every process of the cluster, ffmpeg included, from psutil."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psutil

MIN_INTERVAL_S = 0.5  # looks closer together than this keep the previous figure (too noisy to measure)


@dataclass
class _Sample:
    process: psutil.Process
    cpu_s: float
    at: float
    percent: float


class ProcessMonitor:
    """CPU % of each process over the interval since the previous look (at least MIN_INTERVAL_S); at the first
    look at a process, its average since it started, so a busy ffmpeg never shows 0.0 when it first appears."""

    def __init__(self) -> None:
        self._known: dict[int, _Sample] = {}

    def describe(self, processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        described = []
        alive: set[int] = set()
        for process in processes:
            if process.get("remote"):  # a pid of another host: its figures are those it reported
                described.append({"cpuPercent": None, "rssBytes": None, "threads": None, **process})
                continue
            described.append({**process, **self._usage(process["pid"], alive)})
            if process["role"] == "executor":
                described.extend(self._ffmpeg_children(process["pid"], alive))
        for pid in set(self._known) - alive:
            del self._known[pid]
        return described

    def _usage(self, pid: int, alive: set[int]) -> dict[str, Any]:
        try:
            sample = self._known.get(pid) or self._first_sample(pid)
            with sample.process.oneshot():
                percent = self._cpu_percent(sample)
                usage = {"cpuPercent": percent, "rssBytes": sample.process.memory_info().rss,
                         "threads": sample.process.num_threads()}
        except psutil.Error:
            return {"cpuPercent": None, "rssBytes": None, "threads": None}
        self._known[pid] = sample
        alive.add(pid)
        return usage

    @staticmethod
    def _first_sample(pid: int) -> _Sample:
        process = psutil.Process(pid)
        times = process.cpu_times()
        cpu_s = times.user + times.system
        lifetime_s = max(time.time() - process.create_time(), 1e-3)
        return _Sample(process, cpu_s, time.monotonic(), round(100 * cpu_s / lifetime_s, 1))

    @staticmethod
    def _cpu_percent(sample: _Sample) -> float:
        now = time.monotonic()
        if now - sample.at < MIN_INTERVAL_S:
            return sample.percent
        times = sample.process.cpu_times()
        cpu_s = times.user + times.system
        sample.percent = round(100 * (cpu_s - sample.cpu_s) / (now - sample.at), 1)
        sample.cpu_s, sample.at = cpu_s, now
        return sample.percent

    def _ffmpeg_children(self, executor_pid: int, alive: set[int]) -> list[dict[str, Any]]:
        try:
            children = psutil.Process(executor_pid).children(recursive=True)
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                if "ffmpeg" not in child.name():
                    continue
            except psutil.Error:
                continue
            found.append({"role": "ffmpeg", "pid": child.pid, "parent": executor_pid, **self._usage(child.pid, alive)})
        return found
