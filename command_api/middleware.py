"""Per-request context: a correlation id (X-Request-ID in and out), a JSON access log line, metrics.

Written as plain ASGI (not BaseHTTPMiddleware) so it adds no task or body buffering to the hot
path. The id a client sends is kept when it looks like an id; otherwise a fresh one is made, and
it travels on as the commands' `correlation_id` into Kafka and every service's logs.
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from command_api.metrics import Metrics
from eventstore.logging import bind_correlation, get_logger

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = get_logger("command_api.access")


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with bind_correlation(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("route")
                # Label by route template, never by raw path (ids would explode the label set);
                # /docs and /openapi.json have no APIRoute but fixed paths.
                template = getattr(route, "path", None) or ("unmatched" if status >= 400 else scope.get("path", ""))
                method = scope.get("method", "")
                self.metrics.requests.labels(method, template, str(status)).inc()
                self.metrics.latency.labels(method, template).observe(elapsed)
                log.info(
                    "request",
                    method=method,
                    path=scope.get("path"),
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
