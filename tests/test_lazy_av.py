"""PyAV (``av``, some 25 MB of shared libraries) loads in a web worker only when it probes an upload: the
worker's modules import the media helpers and the kinds, never ``av`` itself. Executors and the primary
still probe and decode as before."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from tests.harness import ROOT, Cluster, wait_until

CHECK = "import sys, {modules}; print('av' in sys.modules)"


def imports_av(*modules: str) -> bool:
    done = subprocess.run([sys.executable, "-c", CHECK.format(modules=", ".join(modules))], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip() == "True"


def test_the_web_worker_modules_do_not_import_av() -> None:
    assert not imports_av("workers.web.app", "workers.web.__main__", "workers.web.host", "workers.web.remote",
                          "workers.web.uploads", "cluster.kinds")
    assert imports_av("cluster.media", "av"), "the check itself tells an import of av"


def av_mapped(pid: int) -> bool:
    """Whether the process has PyAV's libavcodec in its memory (it does once ``av`` is imported)."""
    return any("libavcodec" in Path(m.path).name for m in psutil.Process(pid).memory_maps())


def test_a_web_worker_loads_av_with_its_first_upload(cluster_factory: Callable[..., Cluster], clip: Path) -> None:
    cluster = cluster_factory(workers=1)
    [worker] = cluster.pids("web")
    assert not av_mapped(worker), "an idle web worker has not loaded PyAV"
    video_id = cluster.upload(clip)  # probed in the worker, with PyAV
    assert av_mapped(worker)
    with cluster.client() as client:
        [video] = client.get("/api/videos").json()
    assert video["dimensions"] == {"width": 320, "height": 240}, "probed as before"
    asked = cluster.resize(video_id, 160, 120)
    assert asked.status_code == 202, asked.text
    job_id = asked.json()["jobId"]
    done = wait_until(lambda: (job := cluster.job(job_id))["state"] in ("completed", "dead") and job, 60,
                      "the resize to end", interval_s=0.1)
    assert done["state"] == "completed", done  # the executor probes its output with PyAV
    assert done["result"]["width"] == 160, done["result"]
