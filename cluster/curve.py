"""CurveZMQ for every TCP socket: key pairs, the certificate file a remote host needs, socket set-up.

Keys are Z85 text (40 characters). A client certificate is one JSON file holding the client's public and
secret key and the primary's public key, written 0600: it is the only thing a remote host needs to join.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_LENGTH = 40


class CertError(ValueError):
    """A key or certificate file that cannot be used."""


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))


@dataclass(frozen=True)
class ClientCert:
    """What a remote process presents: its own key pair, and the key of the primary it may talk to."""

    name: str
    public: str
    secret: str
    server_public: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def load(cls, path: Path) -> ClientCert:
        try:
            value = json.loads(path.read_text())
            cert = cls(str(value["name"]), str(value["public"]), str(value["secret"]), str(value["server_public"]))
        except FileNotFoundError as e:
            raise CertError(f"no certificate file {path}") from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CertError(f"{path} is not a certificate made by 'run_cluster.py keys add': {e}") from e
        for key in (cert.public, cert.secret, cert.server_public):
            check_key(key)
        return cert


def check_key(key: str) -> str:
    if len(key) != KEY_LENGTH:
        raise CertError(f"a CURVE key is {KEY_LENGTH} Z85 characters, got {len(key)}")
    return key


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise CertError(f"bad key name {name!r}: letters, digits, '.', '_' and '-', at most 64")
    return name


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, never leaving it readable by others even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def make_server(socket: zmq.Socket, server: KeyPair) -> None:
    """Endpoints bound after this call are CURVE servers; those bound before keep their own mechanism
    (libzmq copies the options into each listener when it binds), so one socket serves ipc and TCP."""
    socket.curve_secretkey = server.secret.encode("ascii")
    socket.curve_publickey = server.public.encode("ascii")
    socket.curve_server = True


def make_client(socket: zmq.Socket, cert: ClientCert) -> None:
    socket.curve_serverkey = cert.server_public.encode("ascii")
    socket.curve_publickey = cert.public.encode("ascii")
    socket.curve_secretkey = cert.secret.encode("ascii")


def tcp_port(endpoint: str) -> tuple[str, int]:
    """``tcp://ADDR:PORT`` -> (ADDR, PORT)."""
    match = re.match(r"^tcp://(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(\d+)$", endpoint)
    if not match:
        raise ValueError(f"not a tcp://ADDR:PORT endpoint: {endpoint!r}")
    return match.group(1), int(match.group(2))
