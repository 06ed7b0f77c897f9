"""The projector's service layer: Kafka records → events → one read-model transaction.

`Projector` decodes event records (asking the event store where a record without headers sits),
applies a batch with the SAME projection functions the replay uses (projector/adapters/engine.py)
in one PostgreSQL transaction, fills stream gaps from the event store and counts what it did.
The consumer (projector/entrypoints/consumer.py) feeds it; projector/bootstrap.py builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter

from eventstore.store import EventStore
from infra.kafka import header
from projector.adapters.engine import BatchResult, Target, apply_events
from projector.domain.events import PoisonEvent, ProjectedEvent

PROJECTED = Counter(
    "billing_projector_events_total",
    "Events the projector took from Kafka: applied (incl. gap-filled from the event store) or duplicate (already applied)",
    ["result"],
)
PROJECTED_APPLIED, PROJECTED_DUPLICATE = PROJECTED.labels("applied"), PROJECTED.labels("duplicate")
BATCHES = Counter("billing_projector_batches_total", "Batches applied, one PostgreSQL transaction each")


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
        BATCHES.inc()
        PROJECTED_APPLIED.inc(result.applied + result.gap_filled)
        PROJECTED_DUPLICATE.inc(result.duplicates)
        return result

    async def apply_records(self, records: Sequence[ConsumerRecord]) -> BatchResult:
        return await self.apply(await self.decode(records))
