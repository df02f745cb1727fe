"""Structured logging for every process: structlog, JSON, with role and pid.

Each log line is also handed to a sink (the primary's PUB socket, or a child's
PUSH to the primary) so that ``run_cluster.py tap`` sees every process's logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import structlog

LogSink = Callable[[bytes], None]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(role: str, level: str = "info", fmt: str = "json", sink: LogSink | None = None) -> None:
    pid = os.getpid()

    def add_process(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("role", role)
        event_dict.setdefault("pid", pid)
        return event_dict

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_process,
        structlog.processors.format_exc_info,
    ]
    if sink is not None:
        processors.append(_shipper(sink))
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    else:
        processors.append(structlog.processors.JSONRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # uvicorn, asyncio and other libraries log through the standard library: the same lines, the same format
    logging.basicConfig(handlers=[_StdlibToStructlog()], level=_LEVELS.get(level, logging.INFO), force=True)


class _StdlibToStructlog(logging.Handler):
    """Hands each standard-library log record to structlog, so that no plain-text line slips into the log."""

    def emit(self, record: logging.LogRecord) -> None:
        method = record.levelname.lower() if record.levelname.lower() in _LEVELS else "error"
        getattr(structlog.get_logger(), method)(record.getMessage(), logger=record.name, exc_info=record.exc_info)


def _shipper(sink: LogSink) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    def ship(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(Exception):  # logging must never take a process down
            sink(json.dumps(event_dict, default=str).encode())
        return event_dict

    return ship


def get_logger(**bound: Any) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(**bound)


MAX_LOGGED_CHARS = 64


def clip(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """A user-supplied value as logged: its first ``limit`` characters, so a huge value costs the log little."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"
