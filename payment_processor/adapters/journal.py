"""The handler's database work on plain asyncpg: load the streams a command needs, commit what it decided.

Why: the handler's statements were most of its CPU through SQLAlchemy (docs/decisions/0048). Here
they run on a plain asyncpg pool with as few round trips as the guarantees allow:

* `load` — the account stream and, for a purchase or grant, the plan's stream: one statement,
  outside any transaction (the expected version guards the append that follows). Events are
  immutable and their ids unique, so typed envelopes are kept in a bounded `EnvelopeCache` by id
  — those this process read and those it committed — and a known event is never decoded and
  validated again (the plan on every purchase; the account a sync reads right after the purchase
  this process handled);
* `commit` — the events, their handled-command rows and outbox rows, the open provider
  operations (`operations.py`) and the scheduler's rows (`schedule.py`: subscriptions and plan
  price changes): ONE statement
  (`asyncpg_store.append` with side writes gated on the append), atomic without a transaction.

The statements for the processor's own tables come from the modules that own those tables: the
open-operation writes are `operations.py`'s and the schedule upsert is `schedule.py`'s
(`SIDE_WRITE_SQL`, built from the same column list as its own upsert), each gated on the append
by `asyncpg_store.ONLY_IF_APPENDED`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from eventstore import asyncpg_store
from infra import db
from eventstore.store import HandledCommand, RecordedEvent
from payment_processor.adapters import operations, schedule
from payment_processor.domain import AccountState, OperationChange, PlanState
from schemas import Envelope, parse_envelope



async def create_pool(database_url: str, *, size: int, application_name: str = "payment-processor") -> asyncpg.Pool:
    """The handler's pool (the event store's statements read and write jsonb as raw JSON text)."""
    return await db.create_pool(database_url, size=size, application_name=application_name, command_timeout_s=60, decode_jsonb=False)


def envelope_of(event: RecordedEvent) -> Envelope:
    """The typed envelope of a stored event (upcast and validated, like `RecordedEvent.envelope()`),
    without the round trip through an ISO timestamp string."""
    return parse_envelope(
        {
            "id": event.event_id,
            "type": event.type,
            "schema_version": event.schema_version,
            "occurred_at": event.occurred_at,
            "stream_id": event.stream_id,
            "data": event.data,
            "metadata": event.metadata,
        }
    )


class EnvelopeCache:
    """Typed envelopes by event id, least recently used out first.

    Only what is certainly stored goes in: envelopes read from the table, and envelopes after
    their append committed (a failed append may be decided differently under the same derived
    ids, so it is never cached).
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[UUID, Envelope] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, event_id: UUID) -> Envelope | None:
        envelope = self._items.get(event_id)
        if envelope is not None:
            self._items.move_to_end(event_id)
        return envelope

    def put(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self._items[envelope.id] = envelope
            self._items.move_to_end(envelope.id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


async def load(conn: asyncpg.Connection, stream_ids: Sequence[str], cache: EnvelopeCache | None = None) -> dict[str, list[Envelope]]:
    """The events of each stream, typed, in one round trip (known ones from `cache`)."""
    out: dict[str, list[Envelope]] = {stream_id: [] for stream_id in stream_ids}
    fresh: list[Envelope] = []
    for row in await asyncpg_store.read_stream_rows(conn, stream_ids):
        envelope = cache.get(row[3]) if cache is not None else None
        if envelope is None:
            envelope = envelope_of(asyncpg_store.recorded(row))
            fresh.append(envelope)
        out[row[1]].append(envelope)
    if cache is not None:
        cache.hits += sum(map(len, out.values())) - len(fresh)
        cache.misses += len(fresh)
        cache.put(fresh)
    return out


def schedule_rows_after(state: AccountState | PlanState, envelopes: Sequence[Envelope]) -> list[schedule.ScheduleRow]:
    """The scheduler's rows an append changes, read off the state with `envelopes` ALREADY applied.

    The same rows as `schedule.schedule_rows(state_before, envelopes)`, without cloning the
    account and applying every event a second time: the handler applies them once, before the
    commit (a failed commit discards that state — the handler re-reads after any failure).
    """
    if not isinstance(state, AccountState):
        return []
    touched = {e.data.subscription_id for e in envelopes if isinstance(e.data, schedule.SCHEDULE_EVENTS)}  # type: ignore[attr-defined]
    rows = []
    for subscription_id in sorted(touched):
        sub = state.subscriptions.get(subscription_id)
        row = schedule.row_of(state, sub) if sub is not None else None
        if row is not None:
            rows.append(row)
    return rows


async def commit(
    conn: asyncpg.Connection,
    stream_id: str,
    expected_version: int,
    envelopes: Sequence[Envelope],
    *,
    handled: Sequence[HandledCommand],
    changes: Sequence[OperationChange],
    schedule_rows: Sequence[schedule.ScheduleRow],
    now: datetime,
    first_check_at: datetime,
) -> list[int]:
    """Append and record everything that must commit with it, in one atomic statement.

    Raises `StreamVersionConflict` / `CommandAlreadyHandled` from the append; nothing is then written.
    """
    side: list[asyncpg_store.SideWrite] = []
    opened, closed = operations.net_changes(changes)
    if closed:
        side.append(asyncpg_store.SideWrite(operations.CLOSE_SQL, {"ids": list(closed)}))
    if opened:
        params = {"stream_id": stream_id, "now": now, "ids": list(opened), "kinds": list(opened.values()),
                  "next": [first_check_at] * len(opened)}
        side.append(asyncpg_store.SideWrite(operations.OPEN_SQL, params))
    if schedule_rows:
        rows = orjson.dumps([_row(r) for r in schedule_rows]).decode()
        side.append(asyncpg_store.SideWrite(schedule.SIDE_WRITE_SQL, {"rows": rows, "now": now}))
    price_changes = schedule.price_change_rows(envelopes, now)
    if price_changes:
        side.append(asyncpg_store.SideWrite(schedule.PRICE_CHANGE_SIDE_WRITE_SQL, {"rows": orjson.dumps(price_changes).decode()}))
    return await asyncpg_store.append(conn, stream_id, expected_version, envelopes, commands=handled, side_writes=side)


def _row(row: schedule.ScheduleRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}  # type: ignore[attr-defined]
