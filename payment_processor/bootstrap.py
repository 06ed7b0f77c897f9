"""The composition root: the only place that reads settings and builds the processor's adapters.

`run()` is the whole process (`python -m payment_processor`): migrate (the event store and the
processor's own schema), make sure the topics exist, then run the consumer loops, the janitor and
the scheduler side by side until SIGTERM / SIGINT, finishing the command in hand and committing
its offset before exiting. `run_scheduler()` and `rebuild_schedule()` are
`python -m payment_processor.scheduler run|rebuild`: the scheduler alone, and the refill of
`processor.schedule` from the event store.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.clock import Clock, ShiftableClock, build_clock
from infra.db import create_engine
from infra.kafka import ConsumerLoop, ensure_topics, install_signal_handlers, make_producer
from infra.logging import get_logger
from infra.metrics import MetricsServer, respond
from infra.settings import Settings
from payment_processor.config import ProcessorServiceSettings, ProcessorSettings
from payment_processor.adapters.gateway import YooKassaGateway
from payment_processor.adapters.journal import create_pool
from payment_processor.adapters.schedule import rebuild
from payment_processor.entrypoints.consumer import build_loops
from payment_processor.entrypoints.janitor import Janitor
from payment_processor.entrypoints.reconcile import DailyReconciliation
from payment_processor.entrypoints.scheduler import Scheduler
from payment_processor.handlers import CommandHandler, CrashPoints
from payment_processor.metrics import open_operations_refresher
from payment_processor.reconciler import Reconciler

log = get_logger(__name__)


def migrate(settings: Settings) -> None:
    from infra.migrate import upgrade

    upgrade(settings, ["eventstore", "payment_processor"])


@dataclass
class Processor:
    """Every part of one running processor, built by `build()`."""

    settings: ProcessorServiceSettings
    config: ProcessorSettings
    engine: AsyncEngine
    clock: Clock
    gateway: YooKassaGateway
    producer: AIOKafkaProducer
    handler: CommandHandler
    loops: list[ConsumerLoop]
    janitor: Janitor | None
    scheduler: Scheduler | None = None
    reconciliation: DailyReconciliation | None = None
    metrics: MetricsServer | None = None  # started on PROCESSOR_METRICS_PORT; /metrics of the health port renders it too
    _health: asyncio.AbstractServer | None = field(default=None, repr=False)

    @property
    def started(self) -> bool:
        return all(loop.started for loop in self.loops)

    def stop(self) -> None:
        for loop in self.loops:
            loop.stop()
        if self.janitor is not None:
            self.janitor.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.reconciliation is not None:
            self.reconciliation.stop()

    async def run(self) -> None:
        """Run until `stop()`; then close everything."""
        tasks = [asyncio.create_task(loop.run(), name=loop.name) for loop in self.loops]
        janitor_task = asyncio.create_task(self.janitor.run(), name="janitor") if self.janitor else None
        scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler") if self.scheduler else None
        reconciliation_task = asyncio.create_task(self.reconciliation.run(), name="reconciliation") if self.reconciliation else None
        if self.config.health_port:
            self._health = await asyncio.start_server(self._serve_health, "127.0.0.1", self.config.health_port)
        if self.config.metrics_port and self.metrics is not None:
            await self.metrics.start()
        log.info(
            "processor_started",
            topic=self.settings.commands_topic,
            group=self.config.group_id,
            consumers=len(self.loops),
            janitor=self.janitor is not None,
            scheduler=self.scheduler is not None,
        )
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    log.error("consumer_loop_crashed", loop=task.get_name(), error=repr(task.exception()))
        finally:
            self.stop()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            if janitor_task is not None:
                with contextlib.suppress(Exception):
                    await janitor_task
            if scheduler_task is not None:
                with contextlib.suppress(Exception):
                    await scheduler_task
            if reconciliation_task is not None:
                with contextlib.suppress(Exception):
                    await reconciliation_task
            await self.aclose()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _serve_health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request_line = await asyncio.wait_for(reader.readline(), 2)
            if request_line.split(b" ")[1:2] == [b"/metrics"] and self.metrics is not None:
                # The process's Prometheus metrics, as on PROCESSOR_METRICS_PORT.
                status, body, kind = b"200 OK", await self.metrics.render(), CONTENT_TYPE_LATEST.encode()
            else:
                ok = self.started
                body = b"ok" if ok else b"starting"
                status = b"200 OK" if ok else b"503 Service Unavailable"
                kind = b"text/plain"
            await respond(writer, status, body, kind)
        writer.close()

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.close()
        if self.metrics is not None:
            await self.metrics.close()
        await self.gateway.aclose()
        if self.handler.db is not None:
            await self.handler.db.close()
        await self.producer.stop()
        if isinstance(self.clock, ShiftableClock):
            await self.clock.stop()
        await self.engine.dispose()


async def build(settings: ProcessorServiceSettings, config: ProcessorSettings, *, crash_points: CrashPoints | None = None) -> Processor:
    """Build (and prepare the database and topics for) a processor; `run()` starts it."""
    await asyncio.to_thread(migrate, settings)
    await ensure_topics(settings, {settings.commands_topic: config.commands_partitions, settings.commands_dlq_topic: 1})
    # SQLAlchemy serves the janitor, the scheduler and the clock; commands run on the asyncpg
    # pool (journal.py). No pre-ping: a dead connection fails the tick, which simply runs again.
    engine = create_engine(settings, pool_size=4, application_name="payment-processor", pre_ping=False)
    clock = await build_clock(engine)
    gateway = YooKassaGateway(
        shop_id=settings.yookassa_shop_id,
        secret_key=settings.yookassa_secret_key,
        api_url=settings.yookassa_api_url,
        timeout_s=settings.yookassa_timeout_s,
        max_concurrency=config.provider_concurrency,
    )
    producer = await make_producer(settings, client_id="payment-processor-janitor")
    db = await create_pool(settings.database_url, size=config.db_pool_size)
    handler = CommandHandler(
        engine=engine,
        gateway=gateway,
        clock=clock,
        config=config,
        default_return_url=settings.yookassa_return_url,
        receipts=settings.receipts,
        crash_points=crash_points if crash_points is not None else CrashPoints.from_env(),
        db=db,
    )
    janitor = (
        Janitor(engine=engine, producer=producer, commands_topic=settings.commands_topic, clock=clock, config=config)
        if config.janitor_enabled
        else None
    )
    scheduler = (
        Scheduler(engine=engine, producer=producer, commands_topic=settings.commands_topic, clock=clock, config=config)
        if config.scheduler_enabled
        else None
    )
    reconciliation = (
        DailyReconciliation(
            _reconciler(settings, config, db, gateway, producer),
            after=timedelta(seconds=config.reconcile_after_s),
            tick_s=config.reconcile_tick_s,
        )
        if config.reconcile_enabled
        else None
    )
    metrics = MetricsServer(config.metrics_port or 0, refreshers={"open_operations": open_operations_refresher(db, clock)})
    return Processor(
        settings, config, engine, clock, gateway, producer, handler, build_loops(settings, config, handler), janitor,
        scheduler=scheduler, reconciliation=reconciliation, metrics=metrics,
    )


def _reconciler(settings: ProcessorServiceSettings, config: ProcessorSettings, db: object, gateway: YooKassaGateway, producer: AIOKafkaProducer) -> Reconciler:
    return Reconciler(
        db=db,  # type: ignore[arg-type]
        gateway=gateway,
        producer=producer,
        commands_topic=settings.commands_topic,
        margin=timedelta(seconds=config.reconcile_margin_s),
    )


async def reconcile_once(settings: ProcessorServiceSettings, config: ProcessorSettings, since: datetime, until: datetime) -> dict[str, Any]:
    """`billing reconcile`: one operator run of [since, until); the run and its differences."""
    await asyncio.to_thread(migrate, settings)
    await ensure_topics(settings, {settings.commands_topic: config.commands_partitions})
    gateway = YooKassaGateway(
        shop_id=settings.yookassa_shop_id,
        secret_key=settings.yookassa_secret_key,
        api_url=settings.yookassa_api_url,
        timeout_s=settings.yookassa_timeout_s,
        max_concurrency=4,
    )
    producer = await make_producer(settings, client_id="billing-reconcile")
    db = await create_pool(settings.database_url, size=2, application_name="billing-reconcile")
    try:
        reconciler = _reconciler(settings, config, db, gateway, producer)
        try:
            result = await reconciler.run(since, until, trigger="operator")
        except Exception:  # noqa: BLE001 - the failed run is stored; show it
            async with db.acquire() as conn:
                run_id = await conn.fetchval(
                    "SELECT run_id FROM processor.reconciliation_runs WHERE trigger = 'operator' ORDER BY started_at DESC LIMIT 1"
                )
            return await reconciler.summary(run_id) if run_id else {"run": None, "differences": []}
        assert result is not None  # an operator run is never refused
        return await reconciler.summary(result.run_id)
    finally:
        await db.close()
        await producer.stop()
        await gateway.aclose()


async def run(settings: ProcessorServiceSettings, config: ProcessorSettings) -> None:
    processor = await build(settings, config)
    install_signal_handlers(*processor.loops, extra=processor.stop)
    await processor.run()


async def run_scheduler(settings: Settings, config: ProcessorSettings) -> None:
    """The scheduler alone (`python -m payment_processor.scheduler run`) until SIGTERM / SIGINT.

    It needs only the shared settings: no YooKassa credentials, no consumer, no janitor.
    """
    await asyncio.to_thread(migrate, settings)
    await ensure_topics(settings, {settings.commands_topic: config.commands_partitions})
    engine = create_engine(settings, pool_size=2, application_name="payment-processor-scheduler")
    clock = await build_clock(engine)
    producer = await make_producer(settings, client_id="payment-processor-scheduler")
    scheduler = Scheduler(engine=engine, producer=producer, commands_topic=settings.commands_topic, clock=clock, config=config)
    install_signal_handlers(extra=scheduler.stop)
    try:
        await scheduler.run()
    finally:
        await producer.stop()
        if isinstance(clock, ShiftableClock):
            await clock.stop()
        await engine.dispose()


async def rebuild_schedule(settings: Settings) -> int:
    """Fill `processor.schedule` from the event store (`python -m payment_processor.scheduler rebuild`); rows written."""
    await asyncio.to_thread(migrate, settings)
    engine = create_engine(settings, pool_size=2, application_name="payment-processor-schedule-rebuild")
    try:
        return await rebuild(engine)
    finally:
        await engine.dispose()
