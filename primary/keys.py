"""The keys of a cluster, under ``<data-dir>/keys/`` (0700, every file 0600): the primary's own CURVE key pair
(``server.key``, made on first use) and one file per authorised remote process (``authorized/NAME.key``).

Revoking removes the file; a running primary watches the directory (primary/remote_access.py), so a new or
revoked key takes effect at once, without a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cluster.curve import CertError, ClientCert, KeyPair, check_key, check_name, write_private

SERVER_KEY = "server.key"
AUTHORIZED = "authorized"


class KeyStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "keys"
        self.authorized_dir = self.dir / AUTHORIZED

    def prepare(self) -> None:
        for path in (self.dir, self.authorized_dir):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o700)

    def server_keys(self) -> KeyPair:
        """The primary's key pair, made on first use."""
        self.prepare()
        path = self.dir / SERVER_KEY
        if not path.exists():
            pair = KeyPair.generate()
            write_private(path, json.dumps({"public": pair.public, "secret": pair.secret}) + "\n")
            return pair
        try:
            value = json.loads(path.read_text())
            return KeyPair(check_key(str(value["public"])), check_key(str(value["secret"])))
        except (ValueError, KeyError, TypeError) as e:
            raise CertError(f"{path} is damaged: {e}") from e

    def add(self, name: str) -> ClientCert:
        check_name(name)
        path = self._path(name)
        if path.exists():
            raise CertError(f"a key named {name!r} exists already (revoke it first)")
        server = self.server_keys()
        pair = KeyPair.generate()
        write_private(path, json.dumps({"name": name, "public": pair.public}) + "\n")
        return ClientCert(name, pair.public, pair.secret, server.public)

    def revoke(self, name: str) -> bool:
        check_name(name)
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def authorised(self) -> dict[str, str]:
        """Public key -> name of every authorised remote process."""
        keys: dict[str, str] = {}
        if not self.authorized_dir.is_dir():
            return keys
        for path in sorted(self.authorized_dir.glob("*.key")):
            try:
                value = json.loads(path.read_text())
                keys[check_key(str(value["public"]))] = str(value["name"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed while we read, or damaged: not authorised
        return keys

    def _path(self, name: str) -> Path:
        return self.authorized_dir / f"{name}.key"


def keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_cluster.py keys",
                                     description="Authorise remote processes (executors, web tiers) to join the "
                                                 "cluster over TCP with CurveZMQ.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="make a key pair for NAME and authorise it")
    add.add_argument("name")
    add.add_argument("--out", type=Path, default=None,
                     help="the certificate file to write for the remote host (default: NAME.cert)")
    commands.add_parser("list", help="the authorised keys")
    revoke = commands.add_parser("revoke", help="withdraw NAME's key; a running primary cuts it off at once")
    revoke.add_argument("name")
    return parser


def run_keys_command(argv: list[str]) -> int:
    args = keys_parser().parse_args(argv)
    store = KeyStore(args.data_dir)
    try:
        if args.command == "add":
            return _add(store, args.name, args.out or Path(f"{args.name}.cert"))
        if args.command == "list":
            for public, name in sorted(store.authorised().items(), key=lambda item: item[1]):
                print(f"{name}\t{public}")
            return 0
        if not store.revoke(args.name):
            print(f"no key named {args.name!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.name!r}", file=sys.stderr)
        return 0
    except CertError as e:
        print(str(e), file=sys.stderr)
        return 1


def _add(store: KeyStore, name: str, out: Path) -> int:
    if out.exists():
        raise CertError(f"{out} exists already: choose another --out")
    cert = store.add(name)
    write_private(out, cert.to_json())
    print(f"authorised {name!r}; its certificate is {out} (copy it to the remote host, keep it secret)",
          file=sys.stderr)
    return 0
