"""`processor.open_operations`: payments and refunds whose final answer we do not have yet.

Written by the handler in the same statement as the events (an intent opens a row, a final
provider answer deletes it: `OPEN_SQL` / `CLOSE_SQL`, run by `journal.py`), read by the janitor,
which publishes a SyncPayment/SyncRefund for every row that is due and pushes its
`next_check_at` along the schedule.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore.asyncpg_store import ONLY_IF_APPENDED
from payment_processor.domain import OperationChange

# Written by the handler in the same statement as the events they follow (`journal.py`): each is
# a side write of the append, gated on it by `ONLY_IF_APPENDED` (docs/decisions/0048).
OPEN_SQL = f"""
    INSERT INTO processor.open_operations (operation_id, kind, stream_id, opened_at, next_check_at)
    SELECT o.id, o.kind, :stream_id, :now, o.next_check_at
    FROM unnest(CAST(:ids AS uuid[]), CAST(:kinds AS text[]), CAST(:next AS timestamptz[])) AS o(id, kind, next_check_at)
    WHERE {ONLY_IF_APPENDED}
    ON CONFLICT (operation_id) DO NOTHING
"""
CLOSE_SQL = f"DELETE FROM processor.open_operations WHERE operation_id = ANY(CAST(:ids AS uuid[])) AND {ONLY_IF_APPENDED}"

_DUE = text(
    """
    SELECT operation_id, kind, stream_id, opened_at, checks
    FROM processor.open_operations
    WHERE next_check_at <= :now
    ORDER BY next_check_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_CHECKED = text(
    """
    UPDATE processor.open_operations AS o
    SET checks = o.checks + 1, next_check_at = c.next_check_at, last_checked_at = :now
    FROM unnest(CAST(:ids AS uuid[]), CAST(:next AS timestamptz[])) AS c(id, next_check_at)
    WHERE o.operation_id = c.id
    """
)


@dataclass(frozen=True, slots=True)
class OpenOperation:
    operation_id: uuid.UUID
    kind: str
    stream_id: str
    opened_at: datetime
    checks: int


def net_changes(changes: Sequence[OperationChange]) -> tuple[dict[uuid.UUID, str], set[uuid.UUID]]:
    """(opened id → kind, closed ids) of one append; an operation opened and closed in it is neither."""
    opened = {c.operation_id: c.kind for c in changes if c.action == "open"}
    closed = {c.operation_id for c in changes if c.action == "close"}
    for both in opened.keys() & closed:
        del opened[both]
    return opened, closed


async def lock_due(conn: AsyncConnection, now: datetime, limit: int) -> list[OpenOperation]:
    """Due operations, locked for this transaction (another janitor skips them)."""
    result = await conn.execute(_DUE, {"now": now, "limit": limit})
    return [OpenOperation(*row) for row in result]


async def mark_checked(conn: AsyncConnection, checked: Sequence[tuple[uuid.UUID, datetime]], now: datetime) -> None:
    if checked:
        await conn.execute(_CHECKED, {"ids": [c[0] for c in checked], "next": [c[1] for c in checked], "now": now})


async def open_operations(conn: AsyncConnection, stream_id: str | None = None) -> list[OpenOperation]:
    """Every open operation (of one stream): for tests and the operator's eye."""
    sql = "SELECT operation_id, kind, stream_id, opened_at, checks FROM processor.open_operations"
    params: dict[str, object] = {}
    if stream_id is not None:
        sql += " WHERE stream_id = :s"
        params["s"] = stream_id
    result = await conn.execute(text(sql + " ORDER BY opened_at"), params)
    return [OpenOperation(*row) for row in result]
