"""HLS ladder: our single ffmpeg pass against one ffmpeg run per rendition, the old way.

The same generated 20 s 720p clip (a Mandelbrot zoom, detailed enough to cost real encoding work, with a
tone) becomes a 240p/360p/720p ladder both ways, with the same x264 settings per rendition:

- ours: `hls.hls_command`, the job's exact command: decodes once, encodes the audio once;
- baseline: three ffmpeg runs one after another (the same command with one rendition each), each decoding
  the source and encoding the audio itself.

Alternately baseline, ours, baseline, ours; the best wall time of each side counts. CPU time (user + sys of
the ffmpeg processes) is printed too: it moves less than wall time when other work shares the machine.

Target: ours / baseline wall time <= 0.8.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import bench_arguments, verdict, write_summary

from cluster import hls, media

CLIP_S = 20
SOURCE = "mandelbrot=size=1280x720:rate=30"
HEIGHTS = (240, 360, 720)
ROUNDS = 2
TARGET_RATIO = 0.8
QUIET = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[[], None]) -> Timing:
    cpu, start = _children_cpu_s(), time.monotonic()
    work()
    return Timing(time.monotonic() - start, _children_cpu_s() - cpu)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=600)


def generate_source(ffmpeg: str, out: Path) -> Path:
    """A high-quality H.264 + AAC clip: what an upload of a real video looks like to the decoder."""
    run([ffmpeg, *QUIET, "-f", "lavfi", "-i", SOURCE, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(CLIP_S), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "192k", str(out)])
    return out


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def measure(ffmpeg: str, src: Path, tmp: Path) -> tuple[list[Timing], list[Timing]]:
    renditions = hls.ladder(720, HEIGHTS, source_width=1280)

    def ours() -> None:
        run(hls.hls_command(ffmpeg, src, fresh(tmp / "ours"), renditions, has_audio=True))

    def baseline() -> None:
        # The same command cut down to one rendition: identical encoder settings, but each run decodes
        # the source and encodes the audio again.
        for r in renditions:
            run(hls.hls_command(ffmpeg, src, fresh(tmp / "baseline" / r.name), [r], has_audio=True))

    baselines, ourses = [], []
    for round_ in range(ROUNDS):
        baselines.append(timed(baseline))
        ourses.append(timed(ours))
        print(f"round {round_ + 1}: baseline {baselines[-1].wall_s:.2f} s, ours {ourses[-1].wall_s:.2f} s", flush=True)
    return baselines, ourses


def report(baselines: list[Timing], ourses: list[Timing]) -> tuple[bool, str]:
    baseline = min(baselines, key=lambda t: t.wall_s)
    ours = min(ourses, key=lambda t: t.wall_s)
    ratio = ours.wall_s / baseline.wall_s
    cpu_ratio = ours.cpu_s / baseline.cpu_s
    passed = ratio <= TARGET_RATIO
    print(f"\n{CLIP_S} s 1280x720 clip -> HLS {'/'.join(f'{h}p' for h in HEIGHTS)} + AAC, best of {ROUNDS}")
    print(f"{'':26}{'baseline (3 runs)':>18}{'ours (1 run)':>14}")
    print(f"{'wall time (s)':26}{baseline.wall_s:18.2f}{ours.wall_s:14.2f}")
    print(f"{'CPU time (s)':26}{baseline.cpu_s:18.2f}{ours.cpu_s:14.2f}")
    print(f"{'ratio ours/baseline, wall':26}{ratio:32.2f}")
    print(f"{'ratio ours/baseline, CPU':26}{cpu_ratio:32.2f}")
    print(f"{'target (wall)':26}{'<= ' + str(TARGET_RATIO):>32}")
    print(f"{'result':26}{verdict(passed):>32}")
    line = (f"hls: one pass {ours.wall_s:.2f} s vs three runs {baseline.wall_s:.2f} s, ratio {ratio:.2f} "
            f"(CPU {cpu_ratio:.2f}; target <= {TARGET_RATIO})")
    return passed, line


def main() -> int:
    args = bench_arguments(__doc__)
    ffmpeg = media.find_ffmpeg()
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="vc-bench-hls-") as tmp:
        src = generate_source(ffmpeg, Path(tmp) / "source.mp4")
        baselines, ourses = measure(ffmpeg, src, Path(tmp))
    passed, line = report(baselines, ourses)
    write_summary(args.summary_json, "hls", passed, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
