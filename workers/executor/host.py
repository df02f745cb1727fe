"""``run_cluster.py executor``: M remote executors on this host, supervised as the primary supervises its own
(primary/supervisor.py: respawn with back-off, SIGTERM drains, no orphan ffmpeg). A child whose key the
primary refuses exits with EXIT_REFUSED: then the host stops them all and exits non-zero."""

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
from primary.supervisor import Child, ChildSpec, Supervisor
from workers.executor.remote import CERT_ENV, PRIMARY_ENV, STORAGE_ENV

log = get_logger()

STOP_TIMEOUT_S = 10.0


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
    try:
        tcp_port(args.primary)
        ClientCert.load(args.cert)
    except (ValueError, CertError) as e:
        parser.error(str(e))
    configure_logging("executor-host", config.log_level, config.log_format)
    env = {PRIMARY_ENV: args.primary, CERT_ENV: str(args.cert.resolve())}
    if args.storage_dir:
        env[STORAGE_ENV] = str(args.storage_dir.resolve())
    if args.scratch_dir:
        args.scratch_dir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(args.scratch_dir.resolve())
    return asyncio.run(ExecutorHost(config, env).run())


class ExecutorHost:
    def __init__(self, config: ClusterConfig, env: dict[str, str]) -> None:
        self._config = config
        self._spec = ChildSpec("executor", "workers.executor.remote", env=tuple(env.items()))
        self._stop = asyncio.Event()
        self._refused = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        supervisor = Supervisor(self._config, self._exited)
        await supervisor.start(self._spec, self._config.executors)
        log.info("remote executors started", count=self._config.executors, primary=dict(self._spec.env)[PRIMARY_ENV])
        await self._stop.wait()
        await supervisor.stop(STOP_TIMEOUT_S)
        if self._refused:
            print("executor host: the primary refused our key; stopped", file=sys.stderr, flush=True)
            return 1
        return 0

    def _exited(self, child: Child, code: int) -> None:
        if code == EXIT_REFUSED:
            child.retiring = True  # not respawned: it would be refused again
            self._refused = True
            self._stop.set()
