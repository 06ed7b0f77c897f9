"""The composition root: the only place that reads the projector's settings and builds its adapters.

`run()` is the whole process: make sure the events topic exists, open the asyncpg pool (raw JSON
text, the projector's session settings) and the event store's engine, serve the metrics, and run
the consumer until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncpg

from eventstore.store import EventStore
from infra import db
from infra.db import create_engine
from infra.kafka import ensure_topics, install_signal_handlers
from infra.logging import get_logger
from infra.metrics import serve_metrics
from infra.settings import Settings
from projector.adapters import storage
from projector.config import ProjectorSettings
from projector.entrypoints.consumer import ProjectorConsumer
from projector.service import Projector

log = get_logger(__name__)

DEFAULT_EVENTS_PARTITIONS = 6  # as the relay creates the topic (relay/outbox.py)


async def create_pool(settings: Settings, *, size: int = 2, name: str = "projector") -> asyncpg.Pool:
    """The projector's pool: its statements read and write raw JSON text, with its session settings."""
    return await db.create_pool(
        settings.database_url, size=size, application_name=f"billing-{name}", command_timeout_s=60,
        decode_jsonb=False, server_settings=storage.SERVER_SETTINGS,
    )


async def run(settings: ProjectorSettings) -> None:
    """Run the projector until SIGTERM/SIGINT."""
    await ensure_topics(settings, {settings.events_topic: DEFAULT_EVENTS_PARTITIONS})
    pool = await create_pool(settings)
    engine = create_engine(settings, pool_size=2, application_name="billing-projector-store")
    metrics = await serve_metrics(settings.projector_metrics_port)
    try:
        projector = Projector(pool, EventStore(engine))
        loop = ProjectorConsumer(settings, projector)
        install_signal_handlers(loop)
        log.info("projector_starting", topic=settings.events_topic, group=settings.projector_group_id)
        await loop.run()
    finally:
        if metrics is not None:
            await metrics.close()
        await pool.close()
        await engine.dispose()
