#!/usr/bin/env python3
"""Video cluster: run the primary (default), or tap its event stream.

    python run_cluster.py [flags]             run the cluster
    python run_cluster.py tap [--filter job:] print events and logs as JSON lines
                              [--level warning] [--role web]
    python run_cluster.py user add NAME       manage users (add [--admin], list, passwd, remove)
    python run_cluster.py keys add NAME       authorise a remote process (add [--out FILE], list, revoke NAME)
    python run_cluster.py executor --primary tcp://HOST:PORT --cert FILE [--executors M]
                                              run executors on this host for a primary on another
    python run_cluster.py web --primary tcp://HOST:PORT --cert FILE [--host H] [--port P] [--workers N]
                                              serve the API and pages on this host for a primary on another
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import sys

from cluster.config import ClusterConfig, add_config_arguments, config_from_args


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_cluster.py",
        description="Run the video cluster: a primary, N HTTP/WebSocket workers and M FFmpeg executors. "
                    "Every flag can also be set by the environment variable named in its help. "
                    "Sub-commands: 'tap' prints the cluster's events and logs (run_cluster.py tap --help); "
                    "'user' manages accounts (run_cluster.py user --help); 'keys' authorises remote processes "
                    "(run_cluster.py keys --help); 'executor' runs executors for a remote primary "
                    "(run_cluster.py executor --help); 'web' serves the API and pages on another host "
                    "(run_cluster.py web --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arguments(parser)
    return parser


def tap_parser() -> argparse.ArgumentParser:
    from cluster.tap import LEVELS, ROLES

    parser = argparse.ArgumentParser(prog="run_cluster.py tap",
                                     description="Print every event and log line of a running cluster, one JSON "
                                                 "object per line. Takes the cluster's own flags too "
                                                 "(--data-dir D, ...), so that it finds the cluster they started.")
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
        f"video cluster on {base} ({_count(config.workers, 'web worker')}, {_count(config.executors, 'executor')}, "
        f"data in {config.data_dir})\n"
        f"  app:          {base}/\n"
        f"  live events:  {base}/websocket-demo.html\n"
        f"  dashboard:    {base}/dashboard\n"
        f"  health:       {base}/api/health\n"
        f"  tap:          python run_cluster.py tap --data-dir {config.data_dir}   (or: make tap)\n"
    )


SUB_COMMANDS = ("tap", "user", "keys", "executor", "web")


def split_cluster_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """The cluster's own flags (``--data-dir D``, ``--port=P``, ...) wherever they stand, and the other words:
    ``user list --data-dir D`` and ``--data-dir D user list`` mean the same, and ``make tap`` takes the ARGS
    that ``make cluster`` was given."""
    known = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(ClusterConfig)}
    flags: list[str] = []
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        name = word.split("=", 1)[0]
        if name not in known:
            rest.append(word)
        elif "=" in word:
            flags.append(word)
        else:
            flags.extend([word, next(words, "")])
    return flags, rest


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a crash in C code (a SIGSEGV) prints every thread's Python stack to the log
    flags, rest = split_cluster_flags(argv)
    command = rest[0] if rest and rest[0] in SUB_COMMANDS else None
    parser = run_parser()
    try:
        config = config_from_args(parser.parse_args(flags if command else argv))
    except ValueError as e:
        parser.error(str(e))
    if command == "tap":
        from cluster.tap import LogFilter, run_tap

        args = tap_parser().parse_args(rest[1:])
        return run_tap(config.data_dir, args.filter, args.endpoint, log_filter=LogFilter(args.level, args.role))
    if command == "user":
        from primary.user_cli import run_user_command

        return run_user_command(["--data-dir", str(config.data_dir), *rest[1:]])
    if command == "keys":
        from primary.keys import run_keys_command

        return run_keys_command(["--data-dir", str(config.data_dir), *rest[1:]])
    if command == "executor":
        from workers.executor.host import run_executor_host

        return run_executor_host(config, rest[1:])
    if command == "web":
        from workers.web.host import run_web_host

        return run_web_host(config, rest[1:])
    from primary.main import run_primary

    print(banner(config), file=sys.stderr, flush=True)
    return run_primary(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
