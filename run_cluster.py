#!/usr/bin/env python3
"""Video cluster: run the primary (default), or tap its event stream.

    python run_cluster.py [flags]             run the cluster
    python run_cluster.py tap [--filter job:] print events and logs as JSON lines
                              [--level warning] [--role web]
    python run_cluster.py user add NAME       manage users (add [--admin], list, passwd, remove)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cluster.config import ClusterConfig, add_config_arguments, config_from_args, env_name


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_cluster.py",
        description="Run the video cluster: a primary, N HTTP/WebSocket workers and M FFmpeg executors. "
                    "Every flag can also be set by the environment variable named in its help. "
                    "Sub-commands: 'tap' prints the cluster's events and logs (run_cluster.py tap --help); "
                    "'user' manages accounts (run_cluster.py user --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(parser)
    return parser


def tap_parser() -> argparse.ArgumentParser:
    from cluster.tap import LEVELS, ROLES

    parser = argparse.ArgumentParser(prog="run_cluster.py tap",
                                     description="Print every event and log line of a running cluster, one JSON "
                                                 "object per line.")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get(env_name("data_dir"), "data")),
                        help="data dir of the cluster to tap")
    parser.add_argument("--filter", default="", help="topic prefix, e.g. 'job:' or 'log'")
    parser.add_argument("--endpoint", default=None, help="ZMQ endpoint of the PUB socket (default: from --data-dir)")
    parser.add_argument("--level", choices=LEVELS, default=None,
                        help="log lines of this level and above only (events still pass, unless --filter drops them)")
    parser.add_argument("--role", choices=ROLES, default=None,
                        help="log lines of this role only (events still pass, unless --filter drops them)")
    return parser


def banner(config: ClusterConfig) -> str:
    base = f"http://{'localhost' if config.host in ('127.0.0.1', '0.0.0.0') else config.host}:{config.port}"
    return (
        f"video cluster on {base} ({config.workers} web workers, {config.executors} executors, "
        f"data in {config.data_dir})\n"
        f"  app:          {base}/\n"
        f"  live events:  {base}/websocket-demo.html\n"
        f"  dashboard:    {base}/dashboard\n"
        f"  health:       {base}/api/health\n"
        f"  tap:          python run_cluster.py tap --data-dir {config.data_dir}   (or: make tap)\n"
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["tap"]:
        from cluster.tap import LogFilter, run_tap

        args = tap_parser().parse_args(argv[1:])
        return run_tap(args.data_dir, args.filter, args.endpoint, log_filter=LogFilter(args.level, args.role))
    if argv[:1] == ["user"]:
        from primary.user_cli import run_user_command

        return run_user_command(argv[1:])
    parser = run_parser()
    try:
        config = config_from_args(parser.parse_args(argv))
    except ValueError as e:
        parser.error(str(e))
    from primary.main import run_primary

    print(banner(config), file=sys.stderr, flush=True)
    return run_primary(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
