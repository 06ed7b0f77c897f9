"""Reconciliation's database work: what we recorded for a window, and the runs with their differences.

Our side is read from the event store itself (never a read model): the account streams that
recorded a payment or refund event in the window (± the margin, by `recorded_at`, the store's
wall-clock time — YooKassa's `created_at` is wall-clock too), folded by the domain. Runs and their
differences live in `processor.reconciliation_runs` / `processor.reconciliation_differences`
(migration pp0004), read by `billing reconcile` and the admin's Reconciliation page; an operator
marks a difference resolved there.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from payment_processor.adapters import journal
from payment_processor.domain.reconcile import Difference, OurObject, our_objects

PROVIDER_EVENTS = [
    "PaymentCreated", "PaymentSucceeded", "PaymentFailed", "PaymentStateUnknown",
    "RefundCreated", "RefundSucceeded", "RefundFailed", "RefundStateUnknown",
]

_STREAMS = """
    SELECT DISTINCT stream_id FROM eventstore.events
    WHERE recorded_at >= $1 AND recorded_at < $2 AND type = ANY($3::text[]) AND stream_id LIKE 'account-%'
"""
_RECORDED_AT = "SELECT event_id, recorded_at FROM eventstore.events WHERE stream_id = ANY($1::text[]) AND type = ANY($2::text[])"


async def load_ours(conn: asyncpg.Connection, since: datetime, until: datetime) -> list[OurObject]:
    """Our payments and refunds with a YooKassa id, from every account that recorded one in [since, until)."""
    streams = [row[0] for row in await conn.fetch(_STREAMS, since, until, PROVIDER_EVENTS)]
    if not streams:
        return []
    loaded = await journal.load(conn, streams)
    recorded = {row[0]: row[1] for row in await conn.fetch(_RECORDED_AT, streams, PROVIDER_EVENTS)}
    found: list[OurObject] = []
    for stream_id, events in loaded.items():
        found += our_objects(stream_id, events, recorded_at=recorded)
    return found


async def handled_among(conn: asyncpg.Connection, command_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these commands ended already (the event store's handled-command records)."""
    if not command_ids:
        return set()
    rows = await conn.fetch("SELECT command_id FROM eventstore.handled_commands WHERE command_id = ANY($1::uuid[])", list(command_ids))
    return {row[0] for row in rows}


_START = """
    INSERT INTO processor.reconciliation_runs (run_id, trigger, window_start, window_end, started_at, status)
    VALUES ($1, $2, $3, $4, now(), 'running')
    ON CONFLICT DO NOTHING
    RETURNING run_id
"""
_FINISH = """
    UPDATE processor.reconciliation_runs
    SET status = $2, finished_at = now(), payments_seen = $3, refunds_seen = $4, differences = $5, recorded = $6, error = $7
    WHERE run_id = $1
"""
_DIFFERENCE = """
    INSERT INTO processor.reconciliation_differences (
        difference_id, run_id, kind, object_type, provider_id, our_id, user_id, our_status, provider_status,
        our_amount_minor, provider_amount_minor, currency, detail, status, command_id, fact, created_at
    ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now())
"""


async def start_run(conn: asyncpg.Connection, run_id: uuid.UUID, trigger: str, since: datetime, until: datetime) -> bool:
    """Record a run as running; False when a scheduled run of the same window exists already."""
    return await conn.fetchval(_START, run_id, trigger, since, until) is not None


async def finish_run(
    conn: asyncpg.Connection, run_id: uuid.UUID, status: str, *, payments: int = 0, refunds: int = 0,
    differences: int = 0, recorded: int = 0, error: str | None = None,
) -> None:
    await conn.execute(_FINISH, run_id, status, payments, refunds, differences, recorded, error)


async def save_differences(conn: asyncpg.Connection, run_id: uuid.UUID, differences: Sequence[Difference], published: set[uuid.UUID]) -> None:
    """The run's differences: `recorded` when their fact's command went out, else `open`."""
    rows = []
    for d in differences:
        amount = d.provider_amount or d.our_amount
        rows.append(
            (
                uuid.uuid4(), run_id, d.kind, d.object_type, d.provider_id, d.our_id, d.user_id, d.our_status,
                d.provider_status, d.our_amount.minor if d.our_amount else None,
                d.provider_amount.minor if d.provider_amount else None, amount.currency if amount else None, d.detail,
                "recorded" if d.command_id in published else "open", d.command_id,
                orjson.dumps({"type": type(d.fact).__name__, **d.fact.model_dump(mode="json")}).decode() if d.fact else None,
            )
        )
    if rows:
        await conn.executemany(_DIFFERENCE, rows)


async def run_summary(conn: asyncpg.Connection, run_id: uuid.UUID) -> dict[str, Any]:
    """The run and its differences, as `billing reconcile --json` prints them."""
    run = await conn.fetchrow("SELECT * FROM processor.reconciliation_runs WHERE run_id = $1", run_id)
    rows = await conn.fetch(
        "SELECT * FROM processor.reconciliation_differences WHERE run_id = $1 ORDER BY kind, object_type, provider_id", run_id
    )
    return {
        "run": _jsonable(dict(run)) if run else None,
        "differences": [_jsonable({k: v for k, v in dict(r).items() if k != "fact"}) for r in rows],
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v) for k, v in row.items()}


_LAST_SCHEDULED = "SELECT max(window_end) FROM processor.reconciliation_runs WHERE trigger = 'schedule' AND status <> 'failed'"


async def last_scheduled_end(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval(_LAST_SCHEDULED)
