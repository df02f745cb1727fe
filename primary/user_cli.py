"""``run_cluster.py user add|list|passwd|remove``: manage accounts in a data dir's store.

``passwd`` and ``remove`` end sessions. When a primary runs on the data dir they go through it (over the
control socket under ``run/``), so that every web worker forgets those sessions at once; when none runs
they change the store directly (no worker holds a session then).
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import zmq

from cluster.config import ClusterConfig, env_name
from cluster.passwords import MIN_PASSWORD_LENGTH, hash_password
from cluster.protocol import AccountOp, ProtocolError, Reply, Request
from primary.accounts import AccountError, AccountStore
from primary.permissions import PRIVATE_UMASK

PRIMARY_ANSWER_TIMEOUT_MS = 10_000


def user_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_cluster.py user", description="Manage the cluster's users.")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get(env_name("data_dir"), "data")))
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user (the password is asked for)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="an administrator sees and acts on everything")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("list", help="list the users")
    passwd = commands.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    remove = commands.add_parser("remove", help="remove a user and their sessions")
    remove.add_argument("name")
    return parser


def run_user_command(argv: list[str]) -> int:
    args = user_parser().parse_args(argv)
    config = ClusterConfig(data_dir=args.data_dir)
    if not config.db_path.exists():
        if args.command != "add":
            print(f"error: no cluster in the data dir {args.data_dir} (no {config.db_path.name}): give the "
                  f"cluster's --data-dir", file=sys.stderr)
            return 1
        print(f"note: no cluster in {args.data_dir} yet: creating its store there", file=sys.stderr)
    os.umask(PRIVATE_UMASK)  # the store it may create holds password hashes
    store = AccountStore(config.db_path)
    try:
        if args.command in ("passwd", "remove") and primary_running(config.run_dir):
            return _run_through_primary(args, config)
        return _run(args, store)
    except AccountError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _run(args: argparse.Namespace, store: AccountStore) -> int:
    if args.command == "add":
        user = store.add_user(args.name, read_password(args.password_stdin), args.admin)
        print(f"added {'administrator' if user.is_admin else 'user'} {user.name}")
    elif args.command == "list":
        for user in store.users():
            print(f"{user.name}\t{'admin' if user.is_admin else 'user'}")
    elif args.command == "passwd":
        user = store.user_by_name(args.name)
        if user is None:
            raise AccountError(f"no user {args.name!r}")
        store.set_password_hash(user.id, hash_password(read_password(args.password_stdin)))
        print(f"password of {user.name} changed")
    elif args.command == "remove":
        if store.remove_user(args.name) is None:
            raise AccountError(f"no user {args.name!r}")
        print(f"removed {args.name}")
    return 0


def primary_running(run_dir: Path) -> bool:
    """Whether a primary holds the data dir's lock (it takes it for as long as it runs)."""
    try:
        fd = os.open(run_dir / "primary.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the shared lock, if it was taken
    return False


def _run_through_primary(args: argparse.Namespace, config: ClusterConfig) -> int:
    if args.command == "passwd":
        password_hash = hash_password(read_password(args.password_stdin))
        user = call_primary(config, AccountOp.SET_PASSWORD, name=args.name, passwordHash=password_hash)
        print(f"password of {user['username']} changed; their sessions ended")
    else:
        user = call_primary(config, AccountOp.REMOVE, name=args.name)
        print(f"removed {user['username']}; their sessions ended")
    return 0


def call_primary(config: ClusterConfig, op: AccountOp, **args: Any) -> Any:
    """One request to the running primary over its control socket; AccountError when refused or unanswered."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(config.endpoint("control"))
        sock.send(Request(1, op.value, args).encode())
        if not sock.poll(PRIMARY_ANSWER_TIMEOUT_MS):
            raise AccountError(f"the running primary did not answer within {PRIMARY_ANSWER_TIMEOUT_MS // 1000} s")
        reply = Reply.decode(sock.recv())
    except ProtocolError as e:
        raise AccountError(f"the primary's answer was not understood: {e}") from e
    finally:
        sock.close(linger=0)
        context.term()
    if not reply.ok:
        raise AccountError(reply.error or "refused")
    return reply.result


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise AccountError("the passwords differ")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return password
