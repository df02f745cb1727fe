"""S3 storage: uploads through the cluster and jobs on S3, each beside a baseline in the same run.

One moto S3 server (its own process, on loopback) serves both sides:

- upload: a 1 GiB video (a noise clip, copied end to end until it weighs 1 GiB) POSTed with curl (as a
  user sends it) to the cluster with `--storage s3://...`, against boto3's own `upload_file` of the same
  file to the same server; UPLOAD_ROUNDS of each, alternately, the best of each side counts (each
  object is deleted after its round, so the server holds the same at every round). Target: cluster
  throughput >= 0.8x boto3's. During each of the cluster's uploads the web worker's RSS is sampled
  (psutil, every 20 ms), the worker having served one small upload before: target peak - idle < 64 MiB.
- jobs: one convert (to mkv) and one HLS ladder (240p/360p/720p) of a 20 s 720p clip, submit to
  `job:completed` as the client sees it, on a cluster with S3 storage against a cluster on local disk,
  alternately, best of ROUNDS. Target: S3 <= 1.15x local wall time.
- input: the executor downloads its input before ffmpeg runs; letting ffmpeg read a presigned URL
  instead is timed too (download + convert from the file vs convert from the URL), for the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import boto3
import httpx
import psutil
from harness import PYTHON, ROOT, Cluster, bench_arguments, free_port, running_cluster, verdict, write_summary
from websockets.sync.client import connect

from cluster import media

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "bench"
UPLOAD_BYTES = 1024**3
UPLOAD_ROUNDS = 3
ROUNDS = 2
CLIP_S = 20
SAMPLE_INTERVAL_S = 0.02
TARGET_UPLOAD_RATIO = 0.8
TARGET_RSS_MIB = 64
TARGET_JOB_RATIO = 1.15
JOB_DEADLINE_S = 900.0
QUIET = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


@contextlib.contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/moto-api/", timeout=1)
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("moto did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=900)


def big_video(ffmpeg: str, tmp: Path) -> Path:
    """A valid mkv of UPLOAD_BYTES: a 64 MiB-ish noise clip, concatenated (stream copy) until large enough."""
    piece = tmp / "piece.mkv"
    run([ffmpeg, *QUIET, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=4", "-vf",
         "noise=alls=100:allf=t+u", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p",
         str(piece)])
    copies = UPLOAD_BYTES // piece.stat().st_size + 1
    listing = tmp / "pieces.txt"
    listing.write_text(f"file '{piece}'\n" * copies)
    out = tmp / "big.mkv"
    run([ffmpeg, *QUIET, "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)])
    piece.unlink()
    return out


def source_clip(ffmpeg: str, out: Path) -> Path:
    run([ffmpeg, *QUIET, "-f", "lavfi", "-i", "mandelbrot=size=1280x720:rate=30", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=48000", "-t", str(CLIP_S), "-c:v", "libx264", "-preset", "veryfast",
         "-crf", "16", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", str(out)])
    return out


class RssSampler:
    """Peak RSS of some processes, sampled in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self.idle = self._rss()
        self.peak = self.idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        return sum(p.memory_info().rss for p in self._processes)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def file_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while chunk := source.read(size):
            yield chunk


def web_pids(cluster: Cluster) -> list[int]:
    health = httpx.get(cluster.url + "/api/health", headers=cluster.auth_headers, timeout=5).json()
    return [p["pid"] for p in health["processes"] if p["role"] == "web"]


def curl_upload(cluster: Cluster, path: Path) -> str:
    """As a user sends a file: curl streams it from disk (the bench's own process stays out of the way)."""
    headers = [arg for name, value in {**cluster.auth_headers, "filename": path.name}.items()
               for arg in ("-H", f"{name}: {value}")]
    answer = subprocess.run(["curl", "-sS", "--fail-with-body", "-X", "POST", "-T", str(path), *headers,
                             cluster.url + "/api/upload-video"], capture_output=True, text=True, check=True,
                            timeout=JOB_DEADLINE_S)
    return json.loads(answer.stdout)["videoId"]


def upload(cluster: Cluster, path: Path) -> str:
    headers = {**cluster.auth_headers, "filename": path.name, "content-length": str(path.stat().st_size)}
    response = httpx.post(cluster.url + "/api/upload-video", content=file_chunks(path), headers=headers,
                          timeout=JOB_DEADLINE_S, trust_env=False)
    response.raise_for_status()
    return response.json()["videoId"]


def timed(work: Callable[[], object]) -> float:
    start = time.monotonic()
    work()
    return time.monotonic() - start


def measure_upload(s3_cluster: Cluster, s3: object, big: Path) -> tuple[float, float, int]:
    """(boto3's best seconds, the cluster's best seconds, the web worker's largest peak RSS above its idle
    RSS just before an upload, in bytes). The worker has served an upload before (the clip): what its
    first upload loads once (PyAV) is not memory that grows with an upload."""
    baseline, through_cluster, growth = [], [], 0
    for round_ in range(UPLOAD_ROUNDS):
        baseline.append(timed(lambda: s3.upload_file(str(big), BUCKET, "baseline/big.mkv")))  # type: ignore
        s3.delete_object(Bucket=BUCKET, Key="baseline/big.mkv")  # type: ignore[attr-defined]
        with RssSampler(web_pids(s3_cluster)) as rss:
            began = time.monotonic()
            video_id = curl_upload(s3_cluster, big)
            through_cluster.append(time.monotonic() - began)
        growth = max(growth, rss.peak - rss.idle)
        httpx.delete(f"{s3_cluster.url}/api/videos/{video_id}", headers=s3_cluster.auth_headers,
                     timeout=60, trust_env=False).raise_for_status()
        print(f"upload round {round_ + 1}: boto3 {baseline[-1]:.2f} s, cluster {through_cluster[-1]:.2f} s, "
              f"web RSS +{(rss.peak - rss.idle) / 1024**2:.1f} MiB", flush=True)
    return min(baseline), min(through_cluster), growth


def run_job(cluster: Cluster, method: str, path: str, **kwargs: object) -> float:
    """Seconds from the request to the job's job:completed at a WebSocket client (connected before it)."""
    ws_url = cluster.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=cluster.auth_headers, open_timeout=10) as ws, \
            httpx.Client(base_url=cluster.url, headers=cluster.auth_headers, timeout=30, trust_env=False) as client:
        start = time.monotonic()
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        job_id = response.json()["jobId"]
        while (remaining := start + JOB_DEADLINE_S - time.monotonic()) > 0:
            try:
                message = json.loads(ws.recv(remaining))
            except TimeoutError:
                break
            data = message.get("data")
            if not isinstance(data, dict) or data.get("jobId") != job_id:
                continue
            if message["event"] == "job:completed":
                return time.monotonic() - start
            if message["event"] in ("job:permanent-failure", "job:cancelled"):
                raise RuntimeError(f"job {job_id} ended with {message['event']}")
    raise TimeoutError(f"job {job_id} did not complete")


def job_times(cluster: Cluster, video_id: str) -> tuple[float, float]:
    convert = run_job(cluster, "PUT", "/api/video/convert", params={"videoId": video_id}, json={"format": "mkv"})
    ladder = run_job(cluster, "POST", "/api/video/hls", params={"videoId": video_id},
                     json={"renditions": [240, 360, 720]})
    return convert, ladder


def measure_input(ffmpeg: str, s3: object, clip_key: str, tmp: Path) -> tuple[float, float]:
    """(download + convert from the file, convert reading a presigned URL), seconds."""
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": clip_key},  # type: ignore
                                    ExpiresIn=300)

    def from_file() -> None:
        local = tmp / "input.mp4"
        s3.download_file(BUCKET, clip_key, str(local))  # type: ignore[attr-defined]
        run(media.convert_command(ffmpeg, local, tmp / "a.mkv", "mkv", src_format="mp4"))

    def from_url() -> None:
        argv = media.convert_command(ffmpeg, "INPUT", tmp / "b.mkv", "mkv", src_format="mp4")
        index = argv.index("INPUT")
        argv[index - 1:index + 1] = ["-protocol_whitelist", "http,tcp", "-i", url]
        run(argv)

    return timed(from_file), timed(from_url)


def main() -> int:
    args = bench_arguments(__doc__)
    ffmpeg = media.find_ffmpeg()
    os.environ.update(CREDENTIALS)
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="vc-bench-s3-") as tmp_name:
        tmp = Path(tmp_name)
        big = big_video(ffmpeg, tmp)
        clip = source_clip(ffmpeg, tmp / "clip.mp4")
        print(f"upload: {big.stat().st_size / 1024**2:.0f} MiB; clip: {clip.stat().st_size / 1024**2:.1f} MiB",
              flush=True)
        with moto_server(tmp / "moto.log") as endpoint:
            s3 = boto3.client("s3", endpoint_url=endpoint)
            s3.create_bucket(Bucket=BUCKET)
            s3_args = ["--storage", f"s3://{BUCKET}/media", "--s3-endpoint", endpoint,
                       "--scratch-dir", str(tmp / "scratch")]
            with running_cluster(1, 1, s3_args) as s3_cluster, running_cluster(1, 1) as local_cluster:
                s3_video, local_video = upload(s3_cluster, clip), upload(local_cluster, clip)
                baseline_s, cluster_s, rss_bytes = measure_upload(s3_cluster, s3, big)
                upload_mib = big.stat().st_size / 1024**2
                big.unlink()
                print(f"upload, best of {UPLOAD_ROUNDS}: boto3 {baseline_s:.2f} s, cluster {cluster_s:.2f} s, "
                      f"web RSS +{rss_bytes / 1024**2:.1f} MiB", flush=True)
                s3_times, local_times = [], []
                for round_ in range(ROUNDS):
                    local_times.append(job_times(local_cluster, local_video))
                    s3_times.append(job_times(s3_cluster, s3_video))
                    print(f"round {round_ + 1}: local convert/hls {local_times[-1][0]:.2f}/{local_times[-1][1]:.2f}"
                          f" s, S3 {s3_times[-1][0]:.2f}/{s3_times[-1][1]:.2f} s", flush=True)
            file_s, url_s = measure_input(ffmpeg, s3, f"media/{s3_video}/original.mp4", tmp)
        shutil.rmtree(tmp / "scratch", ignore_errors=True)
    return report(args, upload_mib, baseline_s, cluster_s, rss_bytes, s3_times, local_times, file_s, url_s)


def report(args: object, upload_mib: float, baseline_s: float, cluster_s: float, rss_bytes: int,
           s3_times: list[tuple[float, float]], local_times: list[tuple[float, float]], file_s: float,
           url_s: float) -> int:
    mib = upload_mib
    upload_ratio = baseline_s / cluster_s
    rss_mib = rss_bytes / 1024**2
    convert_ratio = min(t[0] for t in s3_times) / min(t[0] for t in local_times)
    hls_ratio = min(t[1] for t in s3_times) / min(t[1] for t in local_times)
    checks = {"upload": upload_ratio >= TARGET_UPLOAD_RATIO, "rss": rss_mib < TARGET_RSS_MIB,
              "convert": convert_ratio <= TARGET_JOB_RATIO, "hls": hls_ratio <= TARGET_JOB_RATIO}
    print(f"\nupload {upload_mib:.0f} MiB: boto3 upload_file {mib / baseline_s:.0f} MiB/s, "
          f"cluster {mib / cluster_s:.0f} MiB/s, ratio {upload_ratio:.2f} (target >= {TARGET_UPLOAD_RATIO}): "
          f"{verdict(checks['upload'])}")
    print(f"web worker peak RSS above idle: {rss_mib:.1f} MiB (target < {TARGET_RSS_MIB}): {verdict(checks['rss'])}")
    print(f"convert 20 s 720p -> mkv, best of {ROUNDS}: local {min(t[0] for t in local_times):.2f} s, "
          f"S3 {min(t[0] for t in s3_times):.2f} s, ratio {convert_ratio:.2f} (target <= {TARGET_JOB_RATIO}): "
          f"{verdict(checks['convert'])}")
    print(f"HLS 240/360/720p, best of {ROUNDS}: local {min(t[1] for t in local_times):.2f} s, "
          f"S3 {min(t[1] for t in s3_times):.2f} s, ratio {hls_ratio:.2f} (target <= {TARGET_JOB_RATIO}): "
          f"{verdict(checks['hls'])}")
    print(f"executor input: download + convert {file_s:.2f} s, convert from a presigned URL {url_s:.2f} s")
    passed = all(checks.values())
    line = (f"s3: upload {upload_ratio:.2f}x boto3, web RSS +{rss_mib:.0f} MiB, convert {convert_ratio:.2f}x and "
            f"HLS {hls_ratio:.2f}x local")
    write_summary(args.summary_json, "s3", passed, line)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
