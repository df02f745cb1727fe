"""Cluster configuration: one frozen dataclass, built once from flags and environment."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.pipeline_spec import parse_named

ENV_PREFIX = "VC_"
# --remote-bind tcp://ADDR:PORT binds these on PORT, PORT+1, ... (CurveZMQ on each)
REMOTE_ENDPOINTS = ("executors", "events", "control", "logs")


@dataclass(frozen=True)
class ClusterConfig:
    host: str = "127.0.0.1"
    port: int = 8060
    data_dir: Path = Path("data")
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    executors: int = 1
    ffmpeg: str | None = None
    ffmpeg_threads: int = 0
    max_retries: int = 3
    retry_initial_ms: int = 2000
    job_timeout_s: float = 3600.0
    max_job_timeout_s: float = 6 * 3600.0
    job_policies: str = ""
    heartbeat_interval_s: float = 1.0
    executor_timeout_s: float = 5.0
    worker_timeout_s: float = 10.0
    worker_boot_timeout_s: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_worker_memory_mb: int = 0
    max_upload_mb: int = 4096
    ws_queue_size: int = 1000
    shutdown_grace_s: float = 5.0
    event_retention: int = 100_000
    event_retention_s: float = 7 * 24 * 3600.0
    pub_hwm: int = 100_000
    keep_completed_s: float = 7 * 24 * 3600.0
    keep_dead_s: float = 30 * 24 * 3600.0
    keep_cancelled_s: float = 30 * 24 * 3600.0
    keep_completed: int = 0
    keep_dead: int = 0
    keep_cancelled: int = 0
    session_ttl_s: float = 7 * 24 * 3600.0
    login_max_failures: int = 5
    login_window_s: float = 60.0
    upload_rate_per_min: float = 120.0
    job_rate_per_min: float = 600.0
    login_rate_per_min: float = 60.0
    max_queued_jobs_per_user: int = 1000
    max_ws_per_worker: int = 10_000
    max_ws_per_user: int = 100
    max_json_body_kb: int = 256
    log_level: str = "info"
    log_format: str = "json"
    job_stall_grace_s: float = 30.0
    max_source_pixels: int = 7680 * 4320
    max_source_fps: float = 240.0
    max_source_duration_s: float = 6 * 3600.0
    max_job_work: int = 40_000_000_000
    webhook_max_attempts: int = 6
    webhook_retry_initial_ms: int = 2000
    webhook_timeout_s: float = 10.0
    webhook_max_per_user: int = 20
    webhook_allow_private: bool = False
    login_max_failures_per_address: int = 50
    forwarded_allow_ips: str = ""
    allowed_origins: str = ""
    metrics_token: str = ""
    header_timeout_s: float = 10.0
    upload_idle_s: float = 30.0
    max_uploads_per_worker: int = 8
    max_uploads_per_user: int = 2
    web_nice: int = 5
    remote_bind: str = ""
    storage: str = ""
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_url_expiry_s: float = 300.0
    s3_run_sweep_s: float = 300.0
    scratch_dir: str = ""
    pipeline: tuple[str, ...] = ()  # NAME=STAGE,STAGE,... (cluster/pipeline_spec.py); repeatable

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cluster.db"

    def endpoint(self, name: str) -> str:
        return f"ipc://{(self.run_dir / f'{name}.ipc').resolve()}"

    def remote_endpoint(self, name: str) -> str:
        """The TCP endpoint for remote processes: ``--remote-bind`` PORT plus the name's offset."""
        address, port = self.remote_bind.removeprefix("tcp://").rsplit(":", 1)
        return f"tcp://{address}:{int(port) + REMOTE_ENDPOINTS.index(name)}"

    @property
    def threads_per_ffmpeg(self) -> int:
        if self.ffmpeg_threads:
            return self.ffmpeg_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.executors))

    def to_json(self) -> str:
        values = dataclasses.asdict(self)
        values["data_dir"] = str(self.data_dir.resolve())
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        values = json.loads(text)
        values["data_dir"] = Path(values["data_dir"])
        values["pipeline"] = tuple(values.get("pipeline", ()))
        return cls(**values)

    @functools.cached_property
    def pipelines(self) -> dict[str, list[dict[str, Any]]]:
        """The named pipelines an upload may start (``?pipeline=NAME``)."""
        return parse_named(self.pipeline)


_HELP = {
    "host": "address to listen on",
    "port": "HTTP/WebSocket port",
    "data_dir": "directory for cluster.db, storage/ and run/ (ipc sockets)",
    "workers": "number of HTTP/WebSocket worker processes (default: CPU count)",
    "executors": "number of FFmpeg executor processes",
    "ffmpeg": "ffmpeg binary (default: ffmpeg on PATH, else the imageio-ffmpeg build)",
    "ffmpeg_threads": "threads per ffmpeg (0: CPU count / executors)",
    "max_retries": "retries after a job's first attempt",
    "retry_initial_ms": "first retry back-off; doubles on each retry",
    "job_timeout_s": "default per-job timeout in seconds",
    "max_job_timeout_s": "largest timeout a request may ask for",
    "job_policies": "per job type retry/timeout policy and concurrency limit, e.g. 'resize:retries=5,"
                    "backoff_ms=1000,factor=2,cap_ms=60000,timeout_s=600;hls:timeout_s=7200,concurrency=1'",
    "heartbeat_interval_s": "executor heartbeat interval",
    "executor_timeout_s": "an executor silent this long is declared lost",
    "worker_timeout_s": "a web worker silent this long (its event loop blocked) is killed and replaced",
    "worker_boot_timeout_s": "a new web worker must serve within this long, or a reload stops",
    "max_requests": "recycle a web worker after this many requests (0: never)",
    "max_requests_jitter": "add up to this many requests at random, so workers do not recycle together",
    "max_worker_memory_mb": "recycle a web worker whose memory passes this (0: never)",
    "max_upload_mb": "largest accepted upload in MiB",
    "ws_queue_size": "live events held back for one WebSocket client while its resume replays, before it is dropped "
                     "(a client is also dropped when 1 MiB waits in its socket)",
    "shutdown_grace_s": "on SIGTERM, seconds running jobs get to finish (then they wait in the store)",
    "event_retention": "number of events kept in the store for resuming clients",
    "event_retention_s": "age in seconds after which stored events are pruned",
    "keep_completed_s": "completed jobs are removed this many seconds after they ended (0: kept)",
    "keep_dead_s": "dead jobs are removed this many seconds after they failed for good (0: kept)",
    "keep_cancelled_s": "cancelled jobs are removed this many seconds after their cancellation (0: kept)",
    "keep_completed": "at most this many completed jobs are kept, the oldest go first (0: any number)",
    "keep_dead": "at most this many dead jobs are kept, the oldest go first (0: any number)",
    "keep_cancelled": "at most this many cancelled jobs are kept, the oldest go first (0: any number)",
    "pub_hwm": "events queued per slow subscriber before the PUB socket drops (workers then fetch the gap)",
    "session_ttl_s": "how long a login lasts",
    "login_max_failures": "failed logins per (user name, address) within the window before 429",
    "login_window_s": "the window for counting failed logins",
    "upload_rate_per_min": "uploads per minute, per user and per address, before 429 (0: no limit)",
    "job_rate_per_min": "job requests per minute, per user and per address, before 429 (0: no limit)",
    "login_rate_per_min": "login attempts per minute, per user name and per address, before 429 (0: no limit)",
    "max_queued_jobs_per_user": "queued, delayed and running jobs a user may have before 429 (0: no limit)",
    "max_ws_per_worker": "WebSocket connections one web worker takes before it refuses with 503 (0: no limit)",
    "max_ws_per_user": "WebSocket connections per user across the cluster before 429 (0: no limit)",
    "max_json_body_kb": "largest JSON request body in KiB (413 beyond)",
    "log_level": "debug, info, warning or error",
    "log_format": "json (for the tap and log shippers) or console",
    "job_stall_grace_s": "a run without word from its executor this long past its job's timeout is stalled: "
                         "the executor is killed and the job re-queued",
    "max_source_pixels": "largest upload frame in pixels (width x height; default 8K UHD, 7680x4320) before 415",
    "max_source_fps": "largest upload frame rate before 415",
    "max_source_duration_s": "longest upload in seconds before 415",
    "max_job_work": "largest job, in output pixels per frame x seconds (summed over an HLS ladder), before 400; "
                    "the default 4e10 allows 8K (7680x4320) for 20 minutes or 1080p for 5 hours, and refuses "
                    "a ten-hour source resized to 8K (1.2e12)",
    "webhook_max_attempts": "tries of one webhook delivery before it is given up",
    "webhook_retry_initial_ms": "first webhook retry back-off; doubles on each retry",
    "webhook_timeout_s": "seconds a webhook receiver gets to answer one delivery",
    "webhook_max_per_user": "webhooks one user may have (0: no limit)",
    "webhook_allow_private": "let webhooks POST to loopback, private and link-local addresses",
    "login_max_failures_per_address": "failed logins per address (any user name) within the window before 429",
    "forwarded_allow_ips": "comma-separated proxy addresses or networks whose X-Forwarded-For/-Proto/-Host are "
                           "believed, or '*' (default: none)",
    "allowed_origins": "comma-separated origins besides the cluster's own (scheme://host:port) that may send "
                       "state-changing requests and open /ws",
    "metrics_token": "a Bearer token that may read /metrics and the details of /api/health without a login",
    "header_timeout_s": "a connection whose request headers are not complete within this long is closed",
    "upload_idle_s": "an upload that sends nothing for this long is aborted (408)",
    "max_uploads_per_worker": "uploads in flight on one web worker before 429 (0: no limit)",
    "max_uploads_per_user": "uploads in flight per user on one web worker before 429 (0: no limit)",
    "web_nice": "how much lower than the primary's the web workers' CPU priority is (0-19): when the cores are "
                "busy the primary, which every request waits on, runs first",
    "remote_bind": "also listen for remote executors and web tiers on tcp://ADDR:PORT (CurveZMQ, keys from "
                   "'run_cluster.py keys'): executors on PORT, events PORT+1, control PORT+2, logs PORT+3",
    "storage": "where media lives: empty for local disk under the data dir, or s3://BUCKET/PREFIX "
               "(credentials from boto3's usual chain on each host)",
    "s3_endpoint": "S3 endpoint URL, for an S3-compatible server (empty: AWS)",
    "s3_region": "S3 region (empty: boto3's usual chain, e.g. AWS_DEFAULT_REGION)",
    "s3_url_expiry_s": "lifetime of the presigned URLs downloads and HLS segments redirect to",
    "s3_run_sweep_s": "how often the primary deletes the S3 run keys of runs no longer running (left by executors "
                      "killed mid-upload); all of them at its start",
    "pipeline": "a named pipeline an upload may start with ?pipeline=NAME: NAME=TYPE[:key=value...][+review],... "
                "e.g. 'web=resize:width=320:height=240,convert:format=webm+review,hls' (repeatable; env: ';' "
                "between pipelines)",
    "scratch_dir": "local directory for upload temp files and executors' job files with S3 storage "
                   "(empty: a directory under the system temp dir)",
}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; each flag's default comes from its environment variable."""
    defaults = ClusterConfig()
    for f in dataclasses.fields(ClusterConfig):
        default = os.environ.get(env_name(f.name), getattr(defaults, f.name))
        kind = _argument_type(f.type)
        if kind is tuple:  # repeatable; its environment variable holds the values separated by ';'
            env = os.environ.get(env_name(f.name), "")
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="append",
                                default=[v for v in env.split(";") if v.strip()] or None,
                                help=f"{_HELP[f.name]} (env {env_name(f.name)})")
            continue
        if kind is bool:  # a switch: given or not; its environment variable is 1/true/yes
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true",
                                default=str(default).lower() in ("1", "true", "yes"),
                                help=f"{_HELP[f.name]} (env {env_name(f.name)})")
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=kind(default) if default is not None else None,
            help=f"{_HELP[f.name]} (env {env_name(f.name)}, default: %(default)s)",
        )


def config_from_args(args: argparse.Namespace) -> ClusterConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ClusterConfig)}
    values["pipeline"] = tuple(values["pipeline"] or ())
    config = ClusterConfig(**values)
    validate(config)
    return config


MAX_NICE = 19
# The numeric fields with a bound, by bound: one table, not an if per field.
_AT_LEAST_ONE = ("workers", "event_retention", "max_json_body_kb", "webhook_max_attempts", "webhook_retry_initial_ms")
_POSITIVE = ("max_source_pixels", "max_source_fps", "max_source_duration_s", "max_job_work", "webhook_timeout_s",
             "header_timeout_s", "upload_idle_s", "s3_url_expiry_s", "s3_run_sweep_s")
_NOT_NEGATIVE = ("executors", "upload_rate_per_min", "job_rate_per_min", "login_rate_per_min",
                 "max_queued_jobs_per_user", "max_ws_per_worker", "max_ws_per_user", "keep_completed_s",
                 "keep_dead_s", "keep_cancelled_s", "keep_completed", "keep_dead", "keep_cancelled",
                 "login_max_failures_per_address", "max_uploads_per_worker", "max_uploads_per_user",
                 "webhook_max_per_user")


def validate(config: ClusterConfig) -> None:
    if not 0 < config.port < 65536:
        raise ValueError(f"port out of range: {config.port}")
    if not 0 <= config.web_nice <= MAX_NICE:
        raise ValueError(f"--web-nice must be from 0 to {MAX_NICE}")
    for names, ok, bound in ((_AT_LEAST_ONE, lambda v: v >= 1, "be at least 1"),
                             (_POSITIVE, lambda v: v > 0, "be positive"),
                             (_NOT_NEGATIVE, lambda v: v >= 0, "not be negative")):
        for name in names:
            if not ok(getattr(config, name)):
                raise ValueError(f"--{name.replace('_', '-')} must {bound}")
    for proxy in config.forwarded_allow_ips.split(","):
        if proxy.strip() and proxy.strip() != "*":
            ipaddress.ip_network(proxy.strip(), strict=False)  # ValueError names the bad one
    if config.storage and not (config.storage.startswith("s3://") and config.storage[5:].split("/")[0]):
        raise ValueError("--storage must be empty (local disk) or s3://BUCKET/PREFIX")
    if config.log_format not in ("json", "console"):
        raise ValueError("--log-format must be json or console")
    if config.remote_bind:
        _validate_remote_bind(config.remote_bind)
    if config.job_policies:
        _validate_job_policies(config.job_policies)
    parse_named(config.pipeline)  # InvalidPipeline (a ValueError) names a malformed --pipeline


def _validate_job_policies(text: str) -> None:
    from cluster.kinds import KINDS
    from primary.retry import RetryPolicy, parse_policies
    from primary.type_gates import parse_concurrency

    parse_concurrency(text, tuple(KINDS))
    parse_policies(text, RetryPolicy())


def _validate_remote_bind(endpoint: str) -> None:
    from cluster.curve import tcp_port

    _address, port = tcp_port(endpoint)
    if not 0 < port <= 65535 - len(REMOTE_ENDPOINTS) + 1:
        raise ValueError(f"--remote-bind port out of range: {port} (it uses {len(REMOTE_ENDPOINTS)} ports)")


def _argument_type(annotation: object) -> type:
    text = str(annotation)
    if text.startswith("tuple"):
        return tuple
    if text == "bool":
        return bool
    if "int" in text:
        return int
    if "float" in text:
        return float
    if "Path" in text:
        return Path
    return str
