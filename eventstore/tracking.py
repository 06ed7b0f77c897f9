"""Exactly-once effects from at-least-once delivery.

Kafka may deliver an event twice (a crash before the offset commit, a relay that republished).
A consumer records (consumer name, event id) in the same PostgreSQL transaction as its effect;
the second delivery finds the record and does nothing. Pattern:

    async with engine.begin() as conn:
        if await first_delivery(conn, "projector", event_id):
            ...apply the effect on conn...
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_RECORD = text(
    "INSERT INTO eventstore.tracking (consumer, event_id) VALUES (:consumer, :event_id) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


async def first_delivery(conn: AsyncConnection, consumer: str, event_id: uuid.UUID) -> bool:
    """Record the event for this consumer; False when it was recorded before (skip the effect)."""
    result = await conn.execute(_RECORD, {"consumer": consumer, "event_id": event_id})
    return result.first() is not None


async def already_seen(conn: AsyncConnection, consumer: str, event_id: uuid.UUID) -> bool:
    result = await conn.execute(
        text("SELECT 1 FROM eventstore.tracking WHERE consumer = :consumer AND event_id = :event_id"),
        {"consumer": consumer, "event_id": event_id},
    )
    return result.first() is not None
