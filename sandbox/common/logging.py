"""Logging set-up for the emulators: the project's structlog configuration when it exists."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(service_name: str) -> structlog.stdlib.BoundLogger:
    """Configure structlog the project's way (JSON lines) and return a bound logger."""
    try:
        from eventstore.logging import configure_logging  # the shared set-up, when present
    except ImportError:
        configure_logging = None
    if configure_logging is not None:
        configure_logging(service_name)
    else:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )
    return structlog.get_logger(service_name).bind(service=service_name)
