"""``hls``: an adaptive ladder of renditions (H.264 + AAC, MPEG-TS segments) under ``hls/``, its master last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster import hls, jobspec
from cluster.kinds.base import Job, Kind, output_entry, per_video
from cluster.storage import HLS_MASTER


def _ladder(job: Job) -> list[hls.Rendition]:
    """The ladder the route checked, by the same rule, on the source as probed now."""
    return jobspec.hls_ladder(job.params.get("renditions", list(jobspec.HLS_HEIGHTS)), job.info.to_dict())


def _work(params: dict[str, Any], info: Any) -> float:
    pixels = sum(r.width * r.height for r in jobspec.hls_ladder(params["renditions"], dict(info)))
    return pixels * float(info.get("duration") or 0.0)


def _command(job: Job, dst: Path) -> list[str]:
    return hls.hls_command(job.ffmpeg, job.source, dst, _ladder(job), job.info.audio_codec is not None,
                           job.threads, job.source_fmt)


def _finish(job: Job, directory: Path) -> dict[str, Any]:
    has_audio = job.info.audio_codec is not None
    variants = hls.write_hls_master(directory / HLS_MASTER, _ladder(job), has_audio)
    base = f"/hls/{job.video_id}"
    playlists = [HLS_MASTER, *(v.uri for v in variants), *([f"{hls.HLS_AUDIO}/{hls.HLS_PLAYLIST}"] if has_audio else [])]
    return {"master": f"{job.output.name}/{HLS_MASTER}", "url": f"{base}/{HLS_MASTER}",
            "renditions": [{"height": v.height, "width": v.width, "bandwidth": v.bandwidth} for v in variants],
            "outputs": [output_entry(name, f"{base}/{name}", directory / name) for name in playlists]}


KIND = Kind(
    name="hls",
    params=lambda body, info: jobspec.hls_params(body, dict(info)),
    work=_work,
    target=per_video(lambda layout, video_id: layout.hls_dir(video_id)),
    command=_command,
    finish=_finish,
    summary_field="hls",
    last=HLS_MASTER,  # a directory
    # one partial directory per ladder: two ladders of one video with other renditions may run at once
    partial_tag=lambda params: "-".join(str(h) for h in params.get("renditions", jobspec.HLS_HEIGHTS)),
)
