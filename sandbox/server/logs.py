"""Logging through structlog only: JSON in production, readable on a terminal.

Events are snake_case; lines about a run are bound with ``request_id`` and
``container_id``. Candidate code and output are logged only at debug level.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False
_min_level = logging.NOTSET  # structlog's default configuration logs every level


def enabled(level: int) -> bool:
    """Whether events at ``level`` (a :mod:`logging` level) are logged.

    For the per-run path: a call on a filtered-out level still costs a few microseconds
    (the lazy logger binds itself anew on every call), so hot paths ask first.
    """
    return level >= _min_level


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Sets up structlog once per process; ``fmt`` is json, console or auto."""
    global _configured, _min_level
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    min_level = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _min_level = min_level
    _configured = True


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(name)
