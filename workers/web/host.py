"""``run_cluster.py web``: N web workers on this host for a primary on another, sharing one listening socket
that this process binds (as the primary does for its own), supervised as the primary supervises its own
(primary/supervisor.py: respawn with back-off; SIGTERM drains them). A worker whose key the primary refuses
exits with EXIT_REFUSED: then the host stops them all and exits non-zero, saying why (the worker said it)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from cluster.child import EXIT_REFUSED
from cluster.config import ClusterConfig
from cluster.curve import CertError, ClientCert, tcp_port
from cluster.logs import configure_logging, get_logger
from primary.listener import bind_listener
from primary.supervisor import Child, ChildSpec, Supervisor
from workers.web.remote import CERT_ENV, PRIMARY_ENV

log = get_logger()

STOP_TIMEOUT_S = 10.0


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
    try:
        tcp_port(args.primary)
        ClientCert.load(args.cert)
    except (ValueError, CertError) as e:
        parser.error(str(e))
    configure_logging("web-host", config.log_level, config.log_format)
    try:
        listener = bind_listener(config.host, config.port)
    except OSError as e:
        print(f"web host: cannot listen on {config.host}:{config.port}: {e}", file=sys.stderr, flush=True)
        return 1
    env = {PRIMARY_ENV: args.primary, CERT_ENV: str(args.cert.resolve())}
    try:
        return asyncio.run(WebHost(config, listener.fileno(), env).run())
    finally:
        listener.close()


class WebHost:
    def __init__(self, config: ClusterConfig, listen_fd: int, env: dict[str, str]) -> None:
        self._config = config
        self._spec = ChildSpec("web", "workers.web.remote", (listen_fd,), env=tuple(env.items()))
        self._stop = asyncio.Event()
        self._refused = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        supervisor = Supervisor(self._config, self._exited)
        await supervisor.start(self._spec, self._config.workers)
        log.info("remote web workers started", count=self._config.workers, port=self._config.port,
                 primary=dict(self._spec.env)[PRIMARY_ENV])
        await self._stop.wait()
        await supervisor.stop(STOP_TIMEOUT_S)  # SIGTERM: each drains (requests finish, WebSockets told 1012)
        if self._refused:
            print("web host: the primary refused us; stopped", file=sys.stderr, flush=True)
            return 1
        return 0

    def _exited(self, child: Child, code: int) -> None:
        if code == EXIT_REFUSED:
            child.retiring = True  # not respawned: it would be refused again
            self._refused = True
            self._stop.set()
