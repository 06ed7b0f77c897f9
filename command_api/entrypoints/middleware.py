"""Per-request context (a correlation id, an access log line, metrics) and the request-body limit.

Written as plain ASGI (not BaseHTTPMiddleware) so it adds no task or body buffering to the hot
path. The id a client sends is kept when it looks like an id; otherwise a fresh one is made, and
it travels on as the commands' `correlation_id` into Kafka and every service's logs.
"""

from __future__ import annotations

import re
import time
import uuid

import orjson

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from command_api.metrics import Metrics
from command_api.domain.problems import PROBLEM_JSON, problem_body
from infra.logging import bind_correlation, get_logger

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


class BodyTooLarge(Exception):
    """Raised from `receive` once a streamed body passes the limit (the 413 is already sent)."""


class BodyLimitMiddleware:
    """Bodies over `max_bytes` get 413 problem+json before anything parses them (or checks a token).

    A declared Content-Length over the limit is refused before the app runs; a chunked body is
    counted as it streams and refused the moment it passes the limit, so at most `max_bytes` plus
    one chunk is ever read. `Connection: close` tells the server to drop the rest instead of
    reading it to find the next request.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"Content-Length {declared}")
            return

        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    refused = True
                    if not started:
                        await self._refuse(scope, send, f"more than {self.max_bytes} bytes streamed")
                    raise BodyTooLarge(f"request body passed {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app makes of the error is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        except Exception:
            if not refused or started:
                raise
            # The app turned BodyTooLarge into an error of its own; the client already has its 413.

    async def _refuse(self, scope: Scope, send: Send, seen: str) -> None:
        log.info("request_body_too_large", path=scope.get("path"), limit=self.max_bytes, seen=seen)
        body = orjson.dumps(
            problem_body(
                413,
                "payload-too-large",
                "Payload too large",
                f"the request body may be at most {self.max_bytes} bytes ({seen})",
                scope.get("path"),
                max_bytes=self.max_bytes,
            )
        )
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None
