"""What a remote web tier and the primary agree on: the settings the primary hands out at hello, and how it
tells a web worker that its key is refused.

The primary hands out the limits and settings a web worker enforces (upload and body limits, origins,
storage, ...), so that every tier of a cluster behaves the same; never a credential. What belongs to the web
host itself (its address, its worker count, the proxies in front of it, its own ffmpeg, its metrics token) it
takes from its own flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cluster.config import ClusterConfig

HELLO_OP = "web_hello"
# an answer no request asked for (id 0) with this status: this process's key is refused (revoked); it exits
REFUSED_STATUS = 403
REFUSAL_ID = 0

HANDED_OUT = (
    "heartbeat_interval_s", "log_level", "max_requests", "max_requests_jitter", "max_worker_memory_mb",
    "max_upload_mb", "ws_queue_size", "pub_hwm", "max_ws_per_worker", "max_json_body_kb", "max_source_pixels",
    "max_source_fps", "max_source_duration_s", "allowed_origins", "header_timeout_s", "upload_idle_s",
    "max_uploads_per_worker", "max_uploads_per_user", "storage", "s3_endpoint", "s3_region", "s3_url_expiry_s",
    "pipeline",  # the named pipelines an upload may start (config.pipelines)
)
# the web host's own flags: where it listens, what it runs, whom it trusts, its own secret
HOST_LOCAL = ("host", "port", "workers", "data_dir", "ffmpeg", "log_format", "forwarded_allow_ips",
              "metrics_token", "scratch_dir", "web_nice")


def web_settings(config: ClusterConfig) -> dict[str, Any]:
    """The primary's answer to hello."""
    return {name: getattr(config, name) for name in HANDED_OUT}


def apply_settings(base: ClusterConfig, settings: dict[str, Any]) -> ClusterConfig:
    """The web host's config with the primary's settings in place; anything else it sent is ignored.
    Raises ValueError for a value of the wrong type."""
    values = {}
    for name in HANDED_OUT:
        if name in settings:
            values[name] = _setting(name, type(getattr(base, name)), settings[name])
    return dataclasses.replace(base, **values)


def _setting(name: str, kind: type, value: Any) -> Any:
    """A handed-out value as the host's config holds it: int, float, str or bool (JSON's own), or a tuple of
    strings (a repeatable option)."""
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"bad setting {name}={value!r} from the primary")
        return tuple(value)
    if not isinstance(value, (int, float, str, bool)) or isinstance(value, bool) != (kind is bool):
        raise ValueError(f"bad setting {name}={value!r} from the primary")
    return kind(value)
