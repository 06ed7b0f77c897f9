"""Logging set-up for the emulators: the project's structlog configuration."""

from __future__ import annotations

import structlog

from infra.logging import configure_logging


def configure(service_name: str) -> structlog.stdlib.BoundLogger:
    """Configure structlog the project's way (JSON lines in services) and return a logger."""
    configure_logging(service_name)
    return structlog.get_logger(service_name)
