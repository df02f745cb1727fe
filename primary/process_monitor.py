"""CPU and memory of every process of the cluster, ffmpeg included, from psutil."""

from __future__ import annotations

from typing import Any

import psutil


class ProcessMonitor:
    """Keeps one psutil.Process per pid, so cpu_percent measures the time since the previous look."""

    def __init__(self) -> None:
        self._known: dict[int, psutil.Process] = {}

    def describe(self, processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        described = []
        alive: set[int] = set()
        for process in processes:
            described.append({**process, **self._usage(process["pid"], alive)})
            if process["role"] == "executor":
                described.extend(self._ffmpeg_children(process["pid"], alive))
        for pid in set(self._known) - alive:
            del self._known[pid]
        return described

    def _usage(self, pid: int, alive: set[int]) -> dict[str, Any]:
        try:
            process = self._known.setdefault(pid, psutil.Process(pid))
            with process.oneshot():
                usage = {"cpuPercent": process.cpu_percent(None), "rssBytes": process.memory_info().rss,
                         "threads": process.num_threads()}
        except psutil.Error:
            return {"cpuPercent": None, "rssBytes": None, "threads": None}
        alive.add(pid)
        return usage

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
