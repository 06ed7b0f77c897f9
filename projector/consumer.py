"""The live projector: `billing.events` → read models, a whole fetched batch per transaction.

`infra.kafka.ConsumerLoop` gives the discipline (commit offsets only after the effect,
bounded retries, dead-letter topic, graceful stop). Its handler is per record; to reach the
pipeline's rate the projector applies each FETCHED batch in one PostgreSQL transaction before the
loop walks the records (`_fetch` below), and the per-record handler then has nothing left to do.
If the batch transaction fails, nothing of it was committed and the loop's per-record path takes
over for that batch: each record in its own transaction with the loop's retries and dead-letter
topic, so one poison record cannot stop the partition. Either way offsets are committed only
after the records' effects are, and a redelivery is a no-op (stream versions, see engine.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter
from pydantic import Field, field_validator

from infra.db import create_engine
from infra import db
from infra.kafka import ConsumerLoop, ensure_topics, header, install_signal_handlers
from infra.logging import get_logger
from infra.metrics import port_or_none, serve_metrics
from infra.settings import Settings
from eventstore.store import EventStore
from projector import storage
from projector.engine import BatchResult, Target, apply_events
from projector.events import PoisonEvent, ProjectedEvent

log = get_logger(__name__)

TRANSIENT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)

DEFAULT_EVENTS_PARTITIONS = 6  # as the relay creates the topic (relay/outbox.py)

PROJECTED = Counter(
    "billing_projector_events_total",
    "Events the projector took from Kafka: applied (incl. gap-filled from the event store) or duplicate (already applied)",
    ["result"],
)
PROJECTED_APPLIED, PROJECTED_DUPLICATE = PROJECTED.labels("applied"), PROJECTED.labels("duplicate")


class ProjectorSettings(Settings):
    """Settings plus the projector's own knobs (environment: PROJECTOR_GROUP_ID, PROJECTOR_BATCH_MAX)."""

    projector_group_id: str = Field(default="billing-projector", description="Kafka consumer group")
    projector_batch_max: int = Field(default=1000, ge=1, description="records fetched (and applied) per transaction")
    projector_session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="Kafka session timeout: how long a crashed instance holds its partitions"
    )
    projector_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="serve Prometheus GET /metrics on 0.0.0.0:<port> when set (unset: off)"
    )

    @field_validator("projector_metrics_port", mode="before")
    @classmethod
    def _empty_port_is_off(cls, value: object) -> object:
        return port_or_none(value)



class Projector:
    """Decodes event records and applies them to the live read models."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, target: Target | None = None) -> None:
        self.pool = pool
        self.store = store
        self.target = target or Target()
        self.applied = 0
        self.duplicates = 0
        self.gap_filled = 0
        self.batches = 0

    async def read_stream(self, stream_id: str, after_version: int) -> list[ProjectedEvent]:
        """Gap filling: the stream's events after `after_version`, from the event store."""
        return [ProjectedEvent.from_recorded(r) for r in await self.store.read_stream(stream_id, after_version=after_version)]

    async def decode(self, records: Sequence[ConsumerRecord]) -> list[ProjectedEvent]:
        """Kafka records → events; raises PoisonEvent for a record that is not a stored event."""
        decoded: list[tuple[dict[str, Any], str | None, str | None]] = []
        for record in records:
            try:
                env = orjson.loads(record.value)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise PoisonEvent(f"record {record.topic}/{record.partition}@{record.offset} is not JSON: {exc}") from exc
            if not isinstance(env, dict):
                raise PoisonEvent(f"record {record.topic}/{record.partition}@{record.offset} is not an envelope")
            decoded.append((env, header(record, "stream_version"), header(record, "position")))
        missing = [str(env.get("id")) for env, version, _ in decoded if version is None]
        found: dict[str, tuple[int, int]] = {}
        if missing:  # published without headers: ask the event store where they are
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT event_id::text, stream_version, position FROM eventstore.events WHERE event_id = ANY($1::uuid[])",
                    missing,
                )
            found = {r[0]: (r[1], r[2]) for r in rows}
        events = []
        for env, version, position in decoded:
            if version is None:
                where = found.get(str(env.get("id")))
                if where is None:
                    raise PoisonEvent(f"event {env.get('id')} has no stream_version header and is not in the event store")
                version, position = str(where[0]), str(where[1])
            events.append(
                ProjectedEvent.from_envelope_dict(env, version=int(version), position=int(position) if position else None)
            )
        return events

    async def apply(self, events: Sequence[ProjectedEvent]) -> BatchResult:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                result = await apply_events(conn, self.target, events, self.read_stream)
        self.applied += result.applied + result.gap_filled
        self.duplicates += result.duplicates
        self.gap_filled += result.gap_filled
        self.batches += 1
        PROJECTED_APPLIED.inc(result.applied + result.gap_filled)
        PROJECTED_DUPLICATE.inc(result.duplicates)
        return result

    async def apply_records(self, records: Sequence[ConsumerRecord]) -> BatchResult:
        return await self.apply(await self.decode(records))


class ProjectorConsumer(ConsumerLoop):
    """A ConsumerLoop that applies every fetched batch in one transaction (see module docstring)."""

    def __init__(self, settings: ProjectorSettings, projector: Projector, **options: Any) -> None:
        self.projector = projector
        self._preapplied: set[tuple[str, int, int]] = set()
        options.setdefault("batch_max", settings.projector_batch_max)
        options.setdefault("dead_letter_topic", settings.events_dlq_topic)
        session_ms = settings.projector_session_timeout_ms
        options.setdefault(
            "consumer_options", {"session_timeout_ms": session_ms, "heartbeat_interval_ms": max(300, session_ms // 5)}
        )
        super().__init__(
            settings,
            topics=[settings.events_topic],
            group_id=settings.projector_group_id,
            handle=self._handle_one,
            name="projector",
            **options,
        )
        self._last_report = time.monotonic()

    async def fetch_batch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        batch = await super().fetch_batch(consumer)
        self._preapplied = set()
        if not batch:
            return batch
        records = [r for rs in batch.values() for r in rs]
        good: list[ConsumerRecord] = []
        events: list[ProjectedEvent] = []
        for record in records:  # decode one by one so a poison record only drops itself to the slow path
            try:
                events.extend(await self.projector.decode([record]))
                good.append(record)
            except PoisonEvent as exc:
                self._log.warning("poison_record", error=str(exc), offset=record.offset, partition=record.partition)
        try:
            result = await self.projector.apply(events)
        except Exception as exc:  # noqa: BLE001 - the per-record path retries and dead-letters
            self._log.warning("batch_failed_per_record_fallback", error=repr(exc), records=len(records))
            return batch
        self._preapplied = {(r.topic, r.partition, r.offset) for r in good}
        self._report(result)
        return batch

    async def _handle_one(self, record: ConsumerRecord) -> None:
        if (record.topic, record.partition, record.offset) in self._preapplied:
            return
        # A database outage is not the record's fault: wait for PostgreSQL instead of spending the
        # loop's bounded attempts (which end in the dead-letter topic). Other errors go to the loop.
        delay = 0.2
        while True:
            try:
                await self.projector.apply_records([record])
                return
            except TRANSIENT_ERRORS as exc:
                if self.stopping:
                    raise
                self._log.warning("database_unavailable_waiting", error=repr(exc), delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _report(self, result: BatchResult) -> None:
        self._log.debug(
            "batch_applied", applied=result.applied, duplicates=result.duplicates,
            gap_filled=result.gap_filled, streams=result.streams, rows=result.rows_written,
        )
        now = time.monotonic()
        if now - self._last_report >= 10:
            self._log.info(
                "projector_progress", applied_total=self.projector.applied, duplicates_total=self.projector.duplicates,
                gap_filled_total=self.projector.gap_filled, batches=self.projector.batches,
            )
            self._last_report = now


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
