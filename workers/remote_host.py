"""A host of remote children (``run_cluster.py executor`` and ``run_cluster.py web``): M children of one role
for a primary on another host, supervised as the primary supervises its own (primary/supervisor.py: respawn
with back-off; SIGTERM drains them). A child whose key the primary refuses exits with EXIT_REFUSED: then the
host stops them all and exits non-zero, saying why (the child said it)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from cluster.child import CERT_ENV, EXIT_REFUSED, PRIMARY_ENV
from cluster.config import ClusterConfig
from cluster.curve import CertError, ClientCert, tcp_port
from cluster.logs import get_logger
from primary.supervisor import Child, ChildSpec, Supervisor

log = get_logger()

STOP_TIMEOUT_S = 10.0


def link_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The children's link to the primary, from ``--primary`` and ``--cert`` (a usage error when wrong)."""
    try:
        tcp_port(args.primary)
        ClientCert.load(args.cert)
    except (ValueError, CertError) as e:
        parser.error(str(e))
    return {PRIMARY_ENV: args.primary, CERT_ENV: str(args.cert.resolve())}


class RemoteHost:
    def __init__(self, config: ClusterConfig, spec: ChildSpec, count: int) -> None:
        self._config = config
        self._spec = spec
        self._count = count
        self._stop = asyncio.Event()
        self._refused = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        supervisor = Supervisor(self._config, self._exited)
        await supervisor.start(self._spec, self._count)
        log.info(f"remote {self._spec.role} processes started", count=self._count,
                 primary=dict(self._spec.env)[PRIMARY_ENV])
        await self._stop.wait()
        await supervisor.stop(STOP_TIMEOUT_S)  # SIGTERM: each drains (jobs finish, web requests finish)
        if self._refused:
            print(f"{self._spec.role} host: the primary refused our key; stopped", file=sys.stderr, flush=True)
            return 1
        return 0

    def _exited(self, child: Child, code: int) -> None:
        if code == EXIT_REFUSED:
            child.retiring = True  # not respawned: it would be refused again
            self._refused = True
            self._stop.set()
