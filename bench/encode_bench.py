"""Encoding: what the executor adds to ffmpeg, and our encoder settings against the old service's.

1. Overhead. For each job type (resize 640x360, convert to webm, convert mp4 -> mkv, extract-audio) on a
   4 s 720p clip with audio: `execute(...)` (probe, ffmpeg with progress parsing, commit, result probe)
   against the bare ffmpeg command it runs, started with subprocess. Alternately, best of 5 each (the
   minimum: other work on the machine only ever adds time).
   Target: execute <= 1.05 x bare + 100 ms.

2. Quality and speed, video only, on a generated 20 s 720p clip (a Mandelbrot zoom: fine detail in motion,
   far harder than testsrc2): the old service's x264 (default preset, CRF 23) and VP9 (`-crf 30 -b:v 0`,
   default speed) against ours from `media.OUTPUT_CODECS`. Each encoder runs once (the old VP9 takes
   minutes); VMAF of each output against the source by the libvmaf filter, read from its JSON log.
   Targets: x264 ours >= 1.5x faster and <= 1 VMAF point lower; VP9 ours >= 5x faster and <= 3 points lower.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import bench_arguments, verdict, write_summary

from cluster import media
from cluster.storage import LocalStorage
from workers.executor.jobs import execute

VIDEO_ID = "bench"
OVERHEAD_CLIP_S = 4
OVERHEAD_ROUNDS = 5
OVERHEAD_FACTOR = 1.05
OVERHEAD_ALLOWANCE_S = 0.1
QUALITY_CLIP_S = 20
QUALITY_SOURCE = "mandelbrot=size=1280x720:rate=30"
QUIET = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
JOBS: list[tuple[str, str, dict[str, Any]]] = [
    ("resize 640x360", "resize", {"width": 640, "height": 360}),
    ("convert webm", "convert", {"format": "webm"}),
    ("convert mp4->mkv", "convert", {"format": "mkv"}),
    ("extract-audio", "extract-audio", {}),
]


@dataclass(frozen=True)
class Encoder:
    family: str
    name: str
    video_args: list[str]
    muxer: str
    ours: bool


ENCODERS = [
    Encoder("x264", "old: default preset, crf 23", ["-c:v", "libx264", "-crf", "23"], "matroska", ours=False),
    Encoder("x264", "ours", media.OUTPUT_CODECS["mkv"][0], "matroska", ours=True),
    Encoder("vp9", "old: default speed, crf 30", ["-c:v", "libvpx-vp9", "-crf", "30", "-b:v", "0"], "webm",
            ours=False),
    Encoder("vp9", "ours", media.OUTPUT_CODECS["webm"][0], "webm", ours=True),
]
TARGETS = {"x264": (1.5, 1.0), "vp9": (5.0, 3.0)}  # (speed-up at least, VMAF points lost at most)


@dataclass(frozen=True)
class Encoded:
    encoder: Encoder
    wall_s: float
    cpu_s: float
    size_bytes: int
    vmaf: float


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=900)


def generate(ffmpeg: str, out: Path, video: str, seconds: int) -> Path:
    run([ffmpeg, *QUIET, "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "192k", str(out)])
    return out


# --- 1. overhead -----------------------------------------------------------------


def bare_command(ffmpeg: str, src: Path, dst: Path, job_type: str, params: dict[str, Any],
                 info: media.MediaInfo) -> list[str]:
    """The command execute() runs for this job (threads 0: ffmpeg's own default)."""
    if job_type == "resize":
        return media.resize_command(ffmpeg, src, dst, params["width"], params["height"], "mp4")
    if job_type == "convert":
        return media.convert_command(ffmpeg, src, dst, params["format"])
    return media.extract_audio_command(ffmpeg, src, dst, copy=info.audio_codec == "aac")


async def time_execute(storage: LocalStorage, video: dict[str, Any], job_type: str, params: dict[str, Any],
                       ffmpeg: str) -> float:
    payload = {"type": job_type, "videoId": VIDEO_ID, "params": params, "timeoutS": 600, "threads": 0,
               "video": video}
    start = time.monotonic()
    await execute(payload, storage, ffmpeg, lambda *_: None)
    return time.monotonic() - start


def time_bare(argv: list[str]) -> float:
    start = time.monotonic()
    run(argv)
    return time.monotonic() - start


async def measure_overhead(ffmpeg: str, tmp: Path) -> list[tuple[str, float, float]]:
    storage = LocalStorage(tmp / "storage")
    storage.prepare()
    source = storage.original(VIDEO_ID, "mp4")
    source.parent.mkdir(parents=True)
    generate(ffmpeg, source, "testsrc2=size=1280x720:rate=30", OVERHEAD_CLIP_S)
    info = media.probe(source)
    video = {"videoId": VIDEO_ID, "name": "source.mp4", "info": {**info.to_dict(), "format": "mp4"}}
    rows = []
    for label, job_type, params in JOBS:
        argv = bare_command(ffmpeg, source, tmp / "bare.part", job_type, params, info)
        bare, ours = [], []
        for _ in range(OVERHEAD_ROUNDS):
            bare.append(time_bare(argv))
            ours.append(await time_execute(storage, video, job_type, params, ffmpeg))
        rows.append((label, min(bare), min(ours)))
        print(f"{label}: bare {min(bare):.3f} s, execute {min(ours):.3f} s", flush=True)
    return rows


def report_overhead(rows: list[tuple[str, float, float]]) -> tuple[bool, str]:
    print(f"\n1. execute() against bare ffmpeg, {OVERHEAD_CLIP_S} s 1280x720 clip, best of {OVERHEAD_ROUNDS}")
    print(f"{'job':20}{'bare (s)':>10}{'execute (s)':>13}{'ratio':>8}{'limit (s)':>11}  result")
    all_passed = True
    worst = ""
    worst_excess = float("-inf")
    for label, bare, ours in rows:
        limit = OVERHEAD_FACTOR * bare + OVERHEAD_ALLOWANCE_S
        passed = ours <= limit
        all_passed &= passed
        if ours - limit > worst_excess:
            worst_excess, worst = ours - limit, f"{label} {ours:.3f} s vs bare {bare:.3f} s"
        print(f"{label:20}{bare:10.3f}{ours:13.3f}{ours / bare:8.2f}{limit:11.3f}  {verdict(passed)}")
    print(f"target: execute <= {OVERHEAD_FACTOR} x bare + {OVERHEAD_ALLOWANCE_S * 1000:.0f} ms")
    return all_passed, f"overhead: worst {worst}"


# --- 2. quality and speed ----------------------------------------------------------


def vmaf(ffmpeg: str, distorted: Path, reference: Path, log: Path) -> float:
    graph = ("[0:v]setpts=PTS-STARTPTS[d];[1:v]setpts=PTS-STARTPTS[r];"
             f"[d][r]libvmaf=log_fmt=json:log_path={log}:n_threads={os.cpu_count() or 1}")
    run([ffmpeg, *QUIET, "-i", str(distorted), "-i", str(reference), "-lavfi", graph, "-f", "null", "-"])
    return float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])


def encode(ffmpeg: str, encoder: Encoder, src: Path, tmp: Path) -> Encoded:
    out = tmp / f"{encoder.family}-{'ours' if encoder.ours else 'old'}.{encoder.muxer}"
    cpu, start = _children_cpu_s(), time.monotonic()
    run([ffmpeg, *QUIET, "-i", str(src), "-map", "0:v:0", *encoder.video_args, "-f", encoder.muxer, str(out)])
    wall, cpu = time.monotonic() - start, _children_cpu_s() - cpu
    score = vmaf(ffmpeg, out, src, out.with_suffix(".vmaf.json"))
    encoded = Encoded(encoder, wall, cpu, out.stat().st_size, score)
    print(f"{encoder.family} {encoder.name}: {wall:.1f} s, VMAF {score:.2f}", flush=True)
    return encoded


def report_quality(results: list[Encoded]) -> tuple[bool, str]:
    print(f"\n2. quality and speed, {QUALITY_CLIP_S} s 1280x720 {QUALITY_SOURCE.split('=')[0]} clip, video only")
    print(f"{'encoder':36}{'wall (s)':>9}{'CPU (s)':>9}{'kbit/s':>9}{'VMAF':>8}")
    for r in results:
        kbps = 8 * r.size_bytes / QUALITY_CLIP_S / 1000
        print(f"{r.encoder.family + ' ' + r.encoder.name:36}{r.wall_s:9.1f}{r.cpu_s:9.1f}{kbps:9.0f}{r.vmaf:8.2f}")
    all_passed, lines = True, []
    for family, (min_speedup, max_loss) in TARGETS.items():
        old = next(r for r in results if r.encoder.family == family and not r.encoder.ours)
        ours = next(r for r in results if r.encoder.family == family and r.encoder.ours)
        speedup, loss = old.wall_s / ours.wall_s, old.vmaf - ours.vmaf
        passed = speedup >= min_speedup and loss <= max_loss
        all_passed &= passed
        print(f"{family}: ours {speedup:.1f}x faster (target >= {min_speedup}), "
              f"{loss:+.2f} VMAF points lost (target <= {max_loss})  {verdict(passed)}")
        lines.append(f"{family} {speedup:.1f}x faster, {loss:+.2f} VMAF")
    return all_passed, "; ".join(lines)


def main() -> int:
    args = bench_arguments(__doc__)
    ffmpeg = media.find_ffmpeg()
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="vc-bench-encode-") as name:
        tmp = Path(name)
        rows = asyncio.run(measure_overhead(ffmpeg, tmp))
        src = generate(ffmpeg, tmp / "quality-source.mp4", QUALITY_SOURCE, QUALITY_CLIP_S)
        results = [encode(ffmpeg, encoder, src, tmp) for encoder in ENCODERS]
    overhead_passed, overhead_line = report_overhead(rows)
    quality_passed, quality_line = report_quality(results)
    write_summary(args.summary_json, "encode", overhead_passed and quality_passed,
                  f"encode: {overhead_line}; {quality_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
