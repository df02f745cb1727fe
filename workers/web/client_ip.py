"""Who is asking, and which address they asked for: the peer, unless a trusted proxy says otherwise.

``X-Forwarded-For``, ``-Proto`` and ``-Host`` are believed only from the peers in ``--forwarded-allow-ips``
(default: none), so nobody can rotate a header to pass for many addresses. ``believe_forwarded``
settles it once per request (workers/web/front_door.py); everything else reads ``client_ip`` and ``own_origin``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class TrustedProxies:
    """The peers whose forwarding headers are believed: addresses, networks (``10.0.0.0/8``) or ``*``."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[IpNetwork] = [ipaddress.ip_network(item, strict=False) for item in items if item != "*"]

    def trusts(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: str) -> str:
        """The first address from the right that is not one of ours: the proxies append, a client can only
        prepend, so everything left of that is the client's own say-so."""
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def believe_forwarded(scope: Any, proxies: TrustedProxies) -> None:
    """``scope["client"]``, ``scope["scheme"]`` and the forwarded host, when the peer is a trusted proxy."""
    peer = scope["client"][0] if scope.get("client") else None
    if not proxies.trusts(peer):
        return
    headers = Headers(scope=scope)
    forwarded_for = ",".join(headers.getlist("x-forwarded-for"))
    if forwarded_for:
        scope["client"] = (proxies.client_of(peer or "", forwarded_for), 0)
    proto = headers.get("x-forwarded-proto", "").strip().lower()
    if proto in ("http", "https"):
        scope["scheme"] = proto.replace("http", "ws") if scope["type"] == "websocket" else proto
    host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    if host:
        scope.setdefault("state", {})["forwarded_host"] = host


def client_ip(connection: HTTPConnection) -> str:
    """The client's address as believed (see ``believe_forwarded``); "" when the server does not know it."""
    return connection.client.host if connection.client else ""


def is_https(scope: Any) -> bool:
    return scope.get("scheme") in ("https", "wss")


def own_origin(scope: Any) -> str:
    """``scheme://host[:port]`` of the cluster as this request addressed it (a default port left out)."""
    host = scope.get("state", {}).get("forwarded_host") or Headers(scope=scope).get("host", "")
    scheme = "https" if is_https(scope) else "http"
    return normalize_origin(f"{scheme}://{host}")


def normalize_origin(origin: str) -> str:
    """Lower case, without a default port or a trailing slash: how two spellings of one origin compare equal."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep:
        return origin.strip().lower()
    host = rest.split("/", 1)[0]
    name, colon, port = host.rpartition(":")
    if colon and "]" not in port and port == DEFAULT_PORTS.get(scheme):
        host = name
    return f"{scheme}://{host}"
