"""The event store's hot path on a plain asyncpg connection: read streams, append with handled commands.

Why a second door to the same tables: a SQLAlchemy Core statement costs about three times the CPU
of the same statement on plain asyncpg (docs/decisions/0065 measured it for the API, 0048 for the
processor), and the payment processor runs several per command. This module is `store.EventStore`'s
`read_stream` and `append` for asyncpg — the same tables, the same guarantees, the same exceptions
(`StreamVersionConflict`, `CommandAlreadyHandled`) — with fewer round trips:

* `read_streams` reads several streams (an account and a plan) in one statement;
* `append` writes the handled-command rows, the events, their outbox rows — and any `SideWrite`s
  of the caller that must commit with them (the processor's open operations and schedule rows) —
  in ONE statement. Events go in only if the stream is at the expected version and none of the
  commands was handled before, everything else only if the events went in; a concurrent writer
  of the same version or command fails the whole statement on a unique index. One statement is
  atomic by itself: no BEGIN/COMMIT round trips, and nothing half-written on any path.

`tests/integration/test_event_store_asyncpg.py` holds both doors to one contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from eventstore.sql import positional
from eventstore.store import _COLUMNS, CommandAlreadyHandled, HandledCommand, RecordedEvent, StreamVersionConflict
from schemas import Envelope

_READ_STREAMS = (
    f"SELECT {_COLUMNS} FROM eventstore.events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version"
)

# $1 stream, $2 expected version; $3..$5 handled commands (ids, types, outcomes as JSON text);
# $6..$11 events (ids, types, schema versions, data and metadata as JSON text, occurred_at).
# Events go in only if the stream is at the expected version and none of the commands was
# handled before; the handled rows and the side writes only if events went in (`appended`).
# A concurrent writer that commits the same version or the same handled command after this
# statement's snapshot trips a unique index and fails the whole statement: every part of it
# happens together or not at all.
_APPEND_HEAD = """
WITH current AS (
    SELECT coalesce(max(stream_version), 0) AS version FROM eventstore.events WHERE stream_id = $1
), seen AS (
    SELECT count(*) AS handled_before FROM eventstore.handled_commands WHERE command_id = ANY($3::uuid[])
), inserted AS (
    INSERT INTO eventstore.events (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)
    SELECT $1, $2 + e.ord, e.event_id, e.type, e.schema_version, e.data::jsonb, e.metadata::jsonb, e.occurred_at
    FROM current, seen,
         unnest($6::uuid[], $7::text[], $8::int[], $9::text[], $10::text[], $11::timestamptz[])
             WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, occurred_at, ord)
    WHERE current.version = $2 AND seen.handled_before = 0
    RETURNING position
), appended AS (
    INSERT INTO eventstore.outbox (position) SELECT position FROM inserted RETURNING position
), handled AS (
    INSERT INTO eventstore.handled_commands (command_id, stream_id, command_type, outcome)
    SELECT c.command_id, $1, c.command_type, c.outcome::jsonb
    FROM unnest($3::uuid[], $4::text[], $5::text[]) AS c(command_id, command_type, outcome)
    WHERE EXISTS (SELECT 1 FROM appended)
)"""
_APPEND_TAIL = """
SELECT (SELECT version FROM current) AS version,
       (SELECT handled_before FROM seen) AS handled_before,
       ARRAY(SELECT position FROM appended ORDER BY position) AS positions
"""
_APPEND_PARAMS = 11


ONLY_IF_APPENDED = "EXISTS (SELECT 1 FROM appended)"
"""The condition a side write puts in its WHERE clause: true only when the append went in (the CTE
`appended` has one row per appended event). The public name of this module's hook."""


@dataclass(frozen=True)
class SideWrite:
    """A data-modifying statement that commits with an append, inside the same SQL statement.

    `sql` is one INSERT/UPDATE/DELETE with `:name` parameters taken from `params`; it must write
    only when the append did, by referring to the CTE `appended` (one row per appended event),
    i.e. `... WHERE {ONLY_IF_APPENDED}`. It sees the database as of the statement's
    start (not the rows the append inserts). Appends that carry side writes must append events.
    """

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "appended" not in self.sql:
            raise ValueError("a side write must be gated on the CTE `appended`")


def _statement(side_writes: Sequence[SideWrite]) -> tuple[str, list[Any]]:
    ctes, args = [], []
    for i, write in enumerate(side_writes):
        sql, names = positional(write.sql, start=_APPEND_PARAMS + len(args) + 1)
        ctes.append(f", side_{i} AS (\n{sql}\n)")
        args.extend(write.params[name] for name in names)
    return _APPEND_HEAD + "".join(ctes) + _APPEND_TAIL, args


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def recorded(row: asyncpg.Record) -> RecordedEvent:
    """A row of `_COLUMNS` as the `RecordedEvent` the SQLAlchemy store returns (JSONB decoded)."""
    return RecordedEvent(row[0], row[1], row[2], row[3], row[4], row[5], _json(row[6]), _json(row[7]), row[8], row[9])


async def read_stream_rows(conn: asyncpg.Connection, stream_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The raw rows (`_COLUMNS`, JSONB still text) of several streams, by stream and version: for a
    caller that can skip decoding events it already knows by id (see `recorded`)."""
    return await conn.fetch(_READ_STREAMS, list(stream_ids))


async def read_streams(conn: asyncpg.Connection, stream_ids: Sequence[str]) -> dict[str, list[RecordedEvent]]:
    """Every event of each stream, in version order, in one round trip (missing streams map to [])."""
    out: dict[str, list[RecordedEvent]] = {stream_id: [] for stream_id in stream_ids}
    for row in await read_stream_rows(conn, stream_ids):
        out[row[1]].append(recorded(row))
    return out


async def append(
    conn: asyncpg.Connection,
    stream_id: str,
    expected_version: int,
    events: Sequence[Envelope],
    *,
    commands: Sequence[HandledCommand] = (),
    side_writes: Sequence[SideWrite] = (),
) -> list[int]:
    """Append atomically — with the handled-command rows and `side_writes` — and return the positions.

    As `EventStore.append`, for asyncpg, in one statement: raises `StreamVersionConflict` when
    the stream is not at `expected_version` and `CommandAlreadyHandled` when one of `commands` was
    recorded before; in both cases nothing at all was written. Unlike `EventStore.append`,
    handled commands need events to go with (the processor's always have their terminal event).
    """
    for event in events:
        if event.stream_id != stream_id:
            raise ValueError(f"event {event.id} belongs to {event.stream_id}, not {stream_id}")
    if (side_writes or commands) and not events:
        raise ValueError("handled commands and side writes go in with appended events: there are none")
    sql, side_args = _statement(side_writes)
    try:
        row = await conn.fetchrow(
            sql,
            stream_id,
            expected_version,
            [c.command_id for c in commands],
            [c.command_type for c in commands],
            [orjson.dumps(c.outcome, default=str).decode() for c in commands],
            [e.id for e in events],
            [e.type for e in events],
            [e.schema_version for e in events],
            [e.data.model_dump_json() for e in events],
            [e.metadata.model_dump_json() for e in events],
            [e.occurred_at for e in events],
            *side_args,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_stream_version_key":
            raise StreamVersionConflict(stream_id, expected_version) from exc
        if exc.constraint_name == "handled_commands_pkey" and commands:
            # A concurrent append recorded one of the commands first. Inside a caller's
            # transaction (now aborted) its outcome cannot be looked up.
            if conn.is_in_transaction():
                raise CommandAlreadyHandled(commands[0].command_id, {}) from exc
            raise CommandAlreadyHandled(*await _handled_before(conn, commands)) from exc
        raise
    assert row is not None
    if row["version"] != expected_version:
        raise StreamVersionConflict(stream_id, expected_version, row["version"])
    if row["handled_before"]:
        raise CommandAlreadyHandled(*await _handled_before(conn, commands))
    return list(row["positions"])


async def _handled_before(conn: asyncpg.Connection, commands: Sequence[HandledCommand]) -> tuple[Any, dict[str, Any]]:
    """The first of `commands` recorded before, and its outcome."""
    rows = await conn.fetch(
        "SELECT command_id, outcome FROM eventstore.handled_commands WHERE command_id = ANY($1::uuid[])", [c.command_id for c in commands]
    )
    found = {r[0]: _json(r[1]) for r in rows}
    for c in commands:
        if c.command_id in found:
            return c.command_id, found[c.command_id] or {}
    return commands[0].command_id, {}  # recorded by a concurrent append that has since rolled back
