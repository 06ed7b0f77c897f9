"""Apply a batch of events to read-model tables exactly once, in stream order, in one transaction.

Used by the live projector (a Kafka batch into `read.*`) and by the replay's catch-up before a
swap or a check (the log tail into a rebuild schema). Per stream, the positions table says which
version the read models already contain:
- an event at or below it is a duplicate (a redelivery, a relay re-publication): skipped;
- version+1 is applied;
- anything higher means a predecessor has not arrived (partition reassignment, reordering):
  the missing events are read from the event store and applied first, never out of order.
The read-model rows, the new versions and (live) nothing else are written in the caller's
transaction, so a crash at any point leaves either all of a batch or none of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from infra.logging import get_logger
from projector.adapters import storage
from projector.domain.events import ProjectedEvent
from projector.domain.projections import TABLES, apply_event, new_state
from projector.domain.state import State

log = get_logger(__name__)

ReadStream = Callable[[str, int], Awaitable[list[ProjectedEvent]]]
"""`read_stream(stream_id, after_version)` → the stream's events after that version, in order."""

PROJECTOR_LOCK_KEY = 7_220_431_050
"""Advisory lock: every projector batch holds it SHARED; the replay's swap/check holds it EXCLUSIVE
(docs/decisions/0050-replay-swap.md)."""


class GapNotFillable(RuntimeError):
    """The event store does not (yet) hold the predecessors of an event we received."""


@dataclass
class Target:
    """Where a batch is applied: a read-model schema and the positions table describing it."""

    schema: str = storage.LIVE_SCHEMA
    positions: str = storage.LIVE_POSITIONS


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    gap_filled: int = 0
    streams: int = 0
    rows_written: int = 0
    gaps: list[str] = field(default_factory=list)


def _needed_keys(events: Sequence[ProjectedEvent]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        d = ev.data
        if ev.user_id is not None:
            keys["users"].add(ev.user_id)
            for name, bucket in (("subscription_id", "subscriptions"), ("payment_id", "payments"), ("refund_id", "refunds")):
                value = d.get(name)
                if value:
                    keys[bucket].add(value)
        elif d.get("plan_id"):
            keys["plans"].add(d["plan_id"])
        elif ev.stream_id.startswith("promo-"):
            keys["promo_codes"].add(ev.stream_id[len("promo-"):])
        for command_id in (ev.command_id, d.get("command_id")):
            if command_id:
                keys["commands"].add(str(command_id))
    return keys


async def load_state(conn: asyncpg.Connection, schema: str, events: Sequence[ProjectedEvent]) -> State:
    """A state holding every row these events may read or change.

    Subscriptions are loaded for whole accounts: the account summary counts them all.
    """
    keys = _needed_keys(events)
    state = new_state()
    users = sorted(keys.get("users", ()))
    loads = [
        ("plans", "plan_id", keys.get("plans", ()), "text"),
        ("promo_codes", "code", keys.get("promo_codes", ()), "text"),
        ("subscriptions", "user_id", users, "text"),
        ("subscriptions", "subscription_id", keys.get("subscriptions", ()), "uuid"),
        ("payments", "payment_id", keys.get("payments", ()), "uuid"),
        ("refunds", "refund_id", keys.get("refunds", ()), "uuid"),
        ("commands", "command_id", keys.get("commands", ()), "uuid"),
        ("accounts", "user_id", users, "text"),
        ("revenue", "user_id", users, "text"),
        ("revenue_subscriptions", "subscription_id", keys.get("subscriptions", ()), "uuid"),
    ]
    for table, column, wanted, column_type in loads:
        key_column = TABLES[table].key
        for row in await storage.load_rows(conn, schema, table, column, wanted, column_type):
            state.load(table, row[key_column], row)
    return state


async def apply_events(
    conn: asyncpg.Connection,
    target: Target,
    events: Sequence[ProjectedEvent],
    read_stream: ReadStream,
    *,
    lock_shared: bool = True,
) -> BatchResult:
    """Apply `events` (any order, duplicates allowed) to `target` inside the caller's transaction."""
    result = BatchResult()
    if not events:
        return result
    if lock_shared:
        # Waits while a replay swaps tables in; no timeout: the swap is short and nothing is lost by waiting.
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", PROJECTOR_LOCK_KEY, timeout=3600)
    by_stream: dict[str, dict[int, ProjectedEvent]] = defaultdict(dict)
    for ev in events:
        by_stream[ev.stream_id].setdefault(ev.version, ev)
    current = await storage.lock_positions(conn, target.positions, list(by_stream))
    result.streams = len(by_stream)

    to_apply: list[ProjectedEvent] = []
    new_versions: dict[str, tuple[int, int | None]] = {}
    for stream_id in sorted(by_stream):
        cur = current.get(stream_id, 0)
        last_position: int | None = None
        for version in sorted(by_stream[stream_id]):
            ev = by_stream[stream_id][version]
            if version <= cur:
                result.duplicates += 1
                continue
            if version > cur + 1:
                missing = [e for e in await read_stream(stream_id, cur) if e.version < version]
                if not missing or missing[0].version != cur + 1 or missing[-1].version != version - 1:
                    raise GapNotFillable(
                        f"{stream_id}: have v{cur}, received v{version}, the event store has "
                        f"{[e.version for e in missing]} in between"
                    )
                to_apply.extend(missing)
                result.gap_filled += len(missing)
                result.gaps.append(f"{stream_id}:{cur + 1}-{version - 1}")
            to_apply.append(ev)
            cur = version
            last_position = ev.position
        if cur != current.get(stream_id, 0):
            new_versions[stream_id] = (cur, last_position)

    if to_apply:
        state = await load_state(conn, target.schema, to_apply)
        for ev in to_apply:
            apply_event(state, ev)
        result.rows_written = await storage.write_dirty(conn, target.schema, state)
        await storage.save_positions(conn, target.positions, new_versions)
    result.applied = len(to_apply) - result.gap_filled
    if result.gaps:
        log.info("gaps_filled", gaps=result.gaps[:20], events=result.gap_filled)
    return result
