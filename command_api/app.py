"""The composition root of the command API: `create_app(settings)` builds everything.

Nothing is created at import time. The lifespan builds the engine, the idempotent Kafka producer
(acks=all) and the clock from the settings it was given, and tears them down in reverse order, so
a test can run several apps side by side, each with its own topic and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import start_http_server
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from command_api.auth import TokenVerifier, verification_key
from command_api.config import ApiSettings, api_settings
from command_api.deps import Services
from command_api.idempotency import IdempotencyStore, create_pool
from command_api.intake import CommandIntake, OutcomeWaiter
from command_api.watch import BatchedWatcher
from command_api.metrics import Metrics
from command_api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from command_api.problems import Problem, install_problem_handlers
from command_api.queries import ReadModels
from command_api.routes import admin, ops, user, webhooks
from command_api.webhooks import RecentSyncs
from infra.clock import build_clock
from infra.db import create_engine
from infra.kafka import ensure_topics, make_producer
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)
PURGE_EVERY_S = 600.0

DESCRIPTION = """
Subscription billing: buy a plan (paid through YooKassa), cancel with a refund for the unused days,
follow every command to its end.

* **Auth** — `Authorization: Bearer <access token>` (JWT, `typ: access`). `sub` is your user id;
  buying needs an `email` claim. Operator endpoints need `role: operator` (or `role: service` with
  `X-Operator`).
* **Idempotency** — every state-changing POST needs an `Idempotency-Key`. The same key and body
  return the first response (for at least 24 hours, header `Idempotent-Replayed: true`); the same
  key with another body is a 422; a request whose key is still being handled gets a 409.
* **Asynchronous commands** — a POST answers `202` once the command is safely in Kafka, with
  `Location: /v1/commands/{id}`. Send `Prefer: wait=5` to wait up to 5 s (at most 10) for the
  outcome instead (a purchase's outcome has the `confirmation_url`).
* **Errors** — always `application/problem+json` (RFC 9457).
"""


async def _start_producer(settings: ApiSettings) -> Any:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(30),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type(Exception),
        reraise=True,
    ):
        with attempt:
            await ensure_topics(settings, {settings.commands_topic: settings.api_commands_partitions}, timeout=10)
            producer = await make_producer(settings, client_id="command-api")
            try:
                # Track the commands topic now: the first command does not wait for its metadata, and
                # later metadata refreshes (and /readyz) ask for this topic only, not for every
                # topic of the cluster (aiokafka asks for all while it tracks none).
                await asyncio.wait_for(producer.partitions_for(settings.commands_topic), 10)
            except BaseException:
                await producer.stop()
                raise
            return producer
    raise RuntimeError("unreachable")


async def _purge_loop(idempotency: IdempotencyStore) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_S)
        try:
            purged = await idempotency.purge_expired()
            if purged:
                log.info("idempotency_keys_purged", count=purged)
        except Exception as exc:  # noqa: BLE001 - housekeeping only; retried next round
            log.warning("idempotency_purge_failed", error=repr(exc)[:300])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    metrics: Metrics = app.state.metrics
    # The request path (reads, long-polls, Idempotency-Keys) runs on a plain asyncpg pool (see
    # create_pool): one autocommitted statement each, a fraction of an ORM's CPU. A request on a
    # dead pooled connection answers 503, retryable; asyncpg drops the broken connection. The
    # SQLAlchemy engine serves only the readiness probe and the shiftable clock.
    engine = create_engine(settings, pool_size=2, application_name="command_api", pre_ping=False)
    producer = None
    pool = None
    clock = None
    waiter = None
    streams = None
    purge = None
    metrics_server = None
    try:
        if settings.api_metrics_enabled and settings.api_metrics_port is not None:
            # Its own port (prometheus_client's server, a daemon thread), e.g. reachable only from
            # the scraper's network; /metrics is then not on the API's port at all.
            metrics_server = start_http_server(settings.api_metrics_port, settings.api_host, registry=metrics.registry)
            log.info("metrics_served", host=settings.api_host, port=settings.api_metrics_port)
        producer = await _start_producer(settings)
        clock = await build_clock(engine)
        pool = await create_pool(settings.database_url, size=settings.api_db_pool_size)
        reads = ReadModels(pool)
        idempotency = IdempotencyStore(
            pool, ttl_s=settings.api_idempotency_ttl_h * 3600, stale_after_s=settings.api_idempotency_stale_s
        )
        waiter = OutcomeWaiter(reads)
        streams = BatchedWatcher(reads.stream_versions, name="stream-version")
        intake = CommandIntake(
            settings=settings,
            producer=producer,
            idempotency=idempotency,
            reads=reads,
            waiter=waiter,
            clock=clock,
            metrics=metrics,
        )
        app.state.services = Services(
            settings=settings,
            engine=engine,
            producer=producer,
            clock=clock,
            reads=reads,
            idempotency=idempotency,
            waiter=waiter,
            streams=streams,
            intake=intake,
            metrics=metrics,
            tokens=TokenVerifier(settings),
            recent_syncs=RecentSyncs(settings.api_webhook_sync_window_s),
        )
        purge = asyncio.create_task(_purge_loop(idempotency), name="idempotency-purge")
        log.info("api_started", commands_topic=settings.commands_topic)
        yield
    finally:
        if purge is not None:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
        if waiter is not None:
            await waiter.stop()
        if streams is not None:
            await streams.stop()
        stop = getattr(clock, "stop", None)
        if stop is not None:
            await stop()
        if producer is not None:
            await producer.stop()
        if pool is not None:
            await pool.close()
        await engine.dispose()
        if metrics_server is not None:
            await asyncio.to_thread(_stop_metrics_server, *metrics_server)
        log.info("api_stopped")


def _stop_metrics_server(server: Any, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve API for these settings (defaults: the environment)."""
    resolved = api_settings(settings) if settings is not None else ApiSettings()
    # Parse the network lists now: a bad CIDR is a configuration error, not a 500 on the first webhook.
    resolved.trusted_webhook_networks  # noqa: B018
    resolved.trusted_proxy_networks  # noqa: B018
    verification_key(resolved)  # and an unusable JWT configuration is one too
    docs = resolved.docs_enabled
    app = FastAPI(
        title="Billing command API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Closed (API_DOCS_ENABLED=false, the production default): no routes at all, so 404.
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        openapi_tags=[
            {"name": "plans", "description": "What is on sale"},
            {"name": "subscriptions", "description": "Buy, cancel, renew"},
            {"name": "payments", "description": "Payments and refunds"},
            {"name": "commands", "description": "Where a command is and how it ended"},
            {"name": "admin", "description": "Operator actions; each is a command with a reason"},
            {"name": "webhooks", "description": "Provider notifications"},
            {"name": "operations", "description": "Health, readiness, metrics"},
        ],
    )
    app.state.settings = resolved
    app.state.metrics = Metrics()
    install_problem_handlers(app)
    for module in (user, admin, webhooks, ops):
        app.include_router(module.router)
    if resolved.api_metrics_enabled and resolved.api_metrics_port is None:
        app.include_router(ops.metrics_router)
    # Added first = inside the request context, so a 413 is logged, counted and has its request id.
    app.add_middleware(BodyLimitMiddleware, max_bytes=resolved.api_max_request_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
