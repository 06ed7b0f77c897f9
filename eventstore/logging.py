"""structlog set-up: JSON lines in services, readable output in a terminal.

Every log line carries the service name and, while a message or request is handled, its
correlation id (bound with `bind_correlation`), so one purchase can be followed across the API,
the processor, the projector and the notifier.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

_configured = False


def configure_logging(service: str, *, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog and the standard library once per process."""
    global _configured
    if json is None:
        json = os.environ.get("LOG_FORMAT", "json" if not sys.stderr.isatty() else "console") == "json"
    level_name = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info if json else structlog.dev.set_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level_name, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s", force=True)
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level_name)))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    _configured = True


@contextmanager
def bind_correlation(correlation_id: str | None, **extra: object) -> Iterator[None]:
    """Bind a correlation id (and any ids) to every log line inside the block."""
    tokens = structlog.contextvars.bind_contextvars(correlation_id=correlation_id, **extra)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
