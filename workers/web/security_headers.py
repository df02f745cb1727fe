"""Security headers on every HTTP response: the pages run only the cluster's own scripts, are never
framed, and no response is sniffed into another type. Harmless on the API's JSON and the media files."""

from __future__ import annotations

# blob: for hls.js (its MediaSource URLs and its worker); 'self' in connect-src also covers ws(s):// here
DIRECTIVES = (
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
    "media-src 'self' blob:", "worker-src 'self' blob:", "connect-src 'self'", "object-src 'none'",
    "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'",
)
CONTENT_SECURITY_POLICY = "; ".join(DIRECTIVES)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
]


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response's headers and each of HEADERS it does not set itself."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *((name, value) for name, value in HEADERS if name not in present)]
