"""structlog set-up: JSON lines in services, readable output in a terminal — for every record.

Every log line carries the service name and, while a message or request is handled, its
correlation id (bound with `bind_correlation`), so one purchase can be followed across the API,
the processor, the projector and the notifier.

One format for the whole process: structlog's own lines and the standard library's records
(uvicorn, aiokafka, Alembic, Django, asyncio, `warnings`) go through the same processors and the
same renderer (the root handler's `ProcessorFormatter`), and an uncaught exception becomes one
more line in that format instead of a bare traceback — so with `LOG_FORMAT=json` a log shipper
can parse every line a service writes. Anything that installs its own handlers (uvicorn's default
`log_config`, Alembic's `fileConfig`, Django's default LOGGING) would break this: the entry
points pass `log_config=None`, Django runs with `LOGGING_CONFIG = None`, and our Alembic `env.py`
never calls `fileConfig`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import structlog

_configured = False


def configure_logging(service: str, *, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog and the standard library once per process (calling again reconfigures)."""
    global _configured
    if json is None:
        json = os.environ.get("LOG_FORMAT", "json" if not sys.stderr.isatty() else "console").strip().lower() == "json"
    level_name = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # structlog's own lines: printed directly (the hot path, no LogRecord in between).
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level_name)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Everybody else's records: the same processors and renderer, plus the logger's name.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_name)
    logging.captureWarnings(True)  # `warnings.warn` → logger "py.warnings" → this handler
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level_name)))
    if json:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    _configured = True


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A crash is one JSON line (with the traceback in `exception`), not thirty lines of text."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    structlog.get_logger("uncaught").critical("uncaught_exception", error=repr(value), exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    structlog.get_logger("uncaught").critical(
        "uncaught_exception", thread=getattr(args.thread, "name", None), error=repr(args.exc_value),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


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
