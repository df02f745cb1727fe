"""``run_cluster.py executor``: M remote executors on this host, supervised by `workers.remote_host.RemoteHost`
(respawn with back-off, SIGTERM drains, no orphan ffmpeg)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from cluster.config import ClusterConfig
from cluster.logs import configure_logging
from primary.supervisor import ChildSpec
from workers.executor.remote import STORAGE_ENV
from workers.remote_host import RemoteHost, link_env


def executor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_cluster.py executor",
        description="Run --executors M FFmpeg executors on this host for a primary started with --remote-bind. "
                    "They take their settings (heartbeat, timeouts, ffmpeg threads, storage) from the primary.")
    parser.add_argument("--primary", required=True, help="the primary's executor endpoint, tcp://HOST:PORT "
                                                         "(the PORT of its --remote-bind)")
    parser.add_argument("--cert", type=Path, required=True, help="the file written by 'run_cluster.py keys add'")
    parser.add_argument("--scratch-dir", type=Path, default=None,
                        help="a directory for temporary files (default: the system's); with S3 storage, inputs "
                             "and outputs will be staged here")
    parser.add_argument("--storage-dir", type=Path, default=None,
                        help="where the primary's storage directory is mounted on this host (default: the path "
                             "the primary gives); needed until S3 storage comes")
    return parser


def run_executor_host(config: ClusterConfig, argv: list[str]) -> int:
    parser = executor_parser()
    args = parser.parse_args(argv)
    env = link_env(parser, args)
    configure_logging("executor-host", config.log_level, config.log_format)
    if args.storage_dir:
        env[STORAGE_ENV] = str(args.storage_dir.resolve())
    if args.scratch_dir:
        args.scratch_dir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(args.scratch_dir.resolve())
    spec = ChildSpec("executor", "workers.executor.remote", env=tuple(env.items()))
    return asyncio.run(RemoteHost(config, spec, config.executors).run())

