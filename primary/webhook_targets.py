"""Where a webhook may POST: http(s) URLs to public addresses only, unless private ones are allowed.

A URL's host is checked twice: at creation when it is a literal address, and at each delivery on the
addresses its name resolves to then; the delivery connects to the address that was checked, so a DNS
answer that changes between the check and the connection (rebinding) cannot point it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REFUSED_KINDS = (("is_loopback", "loopback"), ("is_unspecified", "unspecified"), ("is_link_local", "link-local"),
                  ("is_multicast", "multicast"), ("is_reserved", "reserved"), ("is_private", "private"))


class TargetRefused(ValueError):
    """A URL or an address a webhook may not use; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # a name or a literal address, without brackets
    port: int


def parse_url(url: object) -> Target:
    """The URL's parts, or TargetRefused: http or https, a host, no credentials, at most MAX_URL_LENGTH."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"url is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise TargetRefused("url must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"url is not valid: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("url must be http:// or https://")
    if not parts.hostname:
        raise TargetRefused("url has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("url must not hold credentials")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to ``address`` (None: it may); IPv4-mapped IPv6 counts as its IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for attribute, kind in _REFUSED_KINDS:
        if getattr(address, attribute):
            return f"{address} is a {kind} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def check_at_creation(url: object, allow_private: bool) -> Target:
    target = parse_url(url)
    address = literal_address(target.host)
    reason = refusal(address) if address is not None and not allow_private else None
    if reason:
        raise TargetRefused(f"refused: {reason} (see --webhook-allow-private)")
    return target


async def resolve_checked(target: Target, allow_private: bool) -> IPAddress:
    """The address to connect to: every address the host resolves to must be allowed, the first is used."""
    literal = literal_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = await _resolve(target.host, target.port)
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise TargetRefused(f"refused: {target.host} resolves to {reason}")
    return addresses[0]


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise ConnectionError(f"cannot resolve {host}: {e}") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise ConnectionError(f"cannot resolve {host}: no address")
    return list(dict.fromkeys(addresses))
