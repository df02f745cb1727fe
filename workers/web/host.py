"""``run_cluster.py web``: N web workers on this host for a primary on another, sharing one listening socket
that this process binds (as the primary does for its own), supervised by `workers.remote_host.RemoteHost`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cluster.config import ClusterConfig
from cluster.logs import configure_logging
from primary.listener import bind_listener
from primary.supervisor import ChildSpec
from workers.remote_host import RemoteHost, link_env


def web_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_cluster.py web",
        description="Serve the cluster's API, uploads, WebSockets and pages on this host with --workers N web "
                    "workers on --host/--port, for a primary started with --remote-bind and S3 storage. They take "
                    "the cluster's limits and storage settings from the primary; this host's own flags say where "
                    "they listen, --forwarded-allow-ips (the load balancer in front) and --metrics-token.")
    parser.add_argument("--primary", required=True, help="the primary's --remote-bind endpoint, tcp://HOST:PORT")
    parser.add_argument("--cert", type=Path, required=True, help="the file written by 'run_cluster.py keys add'")
    return parser


def run_web_host(config: ClusterConfig, argv: list[str]) -> int:
    parser = web_parser()
    args = parser.parse_args(argv)
    env = link_env(parser, args)
    configure_logging("web-host", config.log_level, config.log_format)
    try:
        listener = bind_listener(config.host, config.port)
    except OSError as e:
        print(f"web host: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr, flush=True)
        return 1
    spec = ChildSpec("web", "workers.web.remote", (listener.fileno(),), env=tuple(env.items()))
    try:
        return asyncio.run(RemoteHost(config, spec, config.workers).run())
    finally:
        listener.close()

