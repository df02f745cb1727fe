"""``run_cluster.py user add|list|passwd|remove``: manage accounts in a data dir's store."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cluster.config import ClusterConfig, env_name
from cluster.passwords import MIN_PASSWORD_LENGTH, hash_password
from primary.accounts import AccountError, AccountStore
from primary.permissions import PRIVATE_UMASK


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
    db_path = ClusterConfig(data_dir=args.data_dir).db_path
    if not db_path.exists():
        if args.command != "add":
            print(f"error: no cluster in the data dir {args.data_dir} (no {db_path.name}): give the cluster's "
                  f"--data-dir", file=sys.stderr)
            return 1
        print(f"note: no cluster in {args.data_dir} yet: creating its store there", file=sys.stderr)
    os.umask(PRIVATE_UMASK)  # the store it may create holds password hashes
    store = AccountStore(db_path)
    try:
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
        if not store.remove_user(args.name):
            raise AccountError(f"no user {args.name!r}")
        print(f"removed {args.name}")
    return 0


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
