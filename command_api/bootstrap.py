"""The composition root of the command API: the only place that reads settings and builds adapters.

`load_settings()` reads and checks the API's settings; `running(settings, metrics)` builds the
engine, the idempotent Kafka producer (acks=all), the clock, the request path's asyncpg pool and
everything on top of them, and tears them down in reverse order. `create_app(settings)`
(`entrypoints/app.py`) calls both, from its lifespan. Nothing is created at import time, so a
test can run several apps side by side, each with its own topic and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from command_api.adapters.idempotency import IdempotencyStore
from command_api.adapters.intake import CommandIntake, OutcomeWaiter, RecentSyncs
from command_api.adapters.jwks import TokenVerifier
from command_api.adapters.read_models import ReadModels
from command_api.adapters.watch import BatchedWatcher
from command_api.config import ApiSettings, api_settings
from command_api.domain.auth import verification_key
from command_api.metrics import Metrics
from infra import db
from infra.clock import Clock, build_clock
from infra.db import create_engine
from infra.kafka import ensure_topics, make_producer
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)
PURGE_EVERY_S = 600.0


@dataclass
class Services:
    settings: ApiSettings
    engine: AsyncEngine
    producer: AIOKafkaProducer
    clock: Clock
    reads: ReadModels
    idempotency: IdempotencyStore
    waiter: OutcomeWaiter
    streams: BatchedWatcher[str, int]  # projected stream versions, for long-polling GETs
    intake: CommandIntake
    metrics: Metrics
    tokens: TokenVerifier
    recent_syncs: RecentSyncs  # webhook sync commands published lately (bounded per object)


def load_settings(settings: Settings | None = None) -> ApiSettings:
    """The API's settings (defaults: the environment), checked now: a bad CIDR or an unusable JWT
    configuration is a configuration error at start, not a 500 on the first request."""
    resolved = api_settings(settings) if settings is not None else ApiSettings()
    resolved.trusted_webhook_networks  # noqa: B018
    resolved.trusted_proxy_networks  # noqa: B018
    verification_key(resolved)
    return resolved


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
async def running(settings: ApiSettings, metrics: Metrics) -> AsyncIterator[Services]:
    """Every adapter of one API instance, built from `settings`, torn down in reverse order on exit."""
    # The request path (reads, long-polls, Idempotency-Keys) runs on a plain asyncpg pool (see
    # infra.db.create_pool): one autocommitted statement each, a fraction of an ORM's CPU. A request on a
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
        pool = await db.create_pool(settings.database_url, size=settings.api_db_pool_size, application_name="command_api")
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
        services = Services(
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
        yield services
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
