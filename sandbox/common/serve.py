"""Serving a sandbox: one uvicorn setup for both emulators."""

from __future__ import annotations

from typing import Any

import uvicorn

from .logging import configure


def serve(app: Any, *, name: str, host: str, port: int, access_log: bool) -> None:
    """Run `app` until SIGTERM/SIGINT. No proxy-header rewriting: the sandboxes answer local callers,
    and uvicorn's ProxyHeadersMiddleware was a twelfth of their CPU per request."""
    configure(name)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # uvicorn's own dictConfig would print plain text; ours renders JSON (infra/logging.py)
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
