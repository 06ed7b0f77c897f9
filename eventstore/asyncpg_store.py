"""The event store's hot path on a plain asyncpg connection: read streams, append with handled commands.

Why a second door to the same tables: a SQLAlchemy Core statement costs about three times the CPU
of the same statement on plain asyncpg (docs/decisions/0065 measured it for the API, 0048 for the
processor), and the payment processor runs several per command. This module is `store.EventStore`'s
`read_stream` and `append` for asyncpg — the same tables, the same guarantees, the same exceptions
(`StreamVersionConflict`, `CommandAlreadyHandled`) — with fewer round trips:

* `read_streams` reads several streams (an account and a plan) in one statement;
* `append` writes the handled-command rows, the events and their outbox rows in ONE statement.
  The handled rows are inserted only if the stream is at the expected version, the events only if
  every handled row was new, so a single statement is atomic on its own: no BEGIN/COMMIT round
  trips when nothing else has to commit with it. Several handled commands in one append need the
  caller's transaction (a partial insert must roll back), which `append` checks.

`tests/integration/test_event_store_asyncpg.py` holds both doors to one contract.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from eventstore.store import _COLUMNS, CommandAlreadyHandled, HandledCommand, RecordedEvent, StreamVersionConflict
from schemas import Envelope

_READ_STREAMS = (
    f"SELECT {_COLUMNS} FROM eventstore.events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version"
)

# $1 stream, $2 expected version; $3..$5 handled commands (ids, types, outcomes as JSON text);
# $6..$11 events (ids, types, schema versions, data and metadata as JSON text, occurred_at).
# A concurrent append of the same version trips the unique (stream_id, stream_version) index and
# the whole statement — handled rows included — fails.
_APPEND = """
WITH current AS (
    SELECT coalesce(max(stream_version), 0) AS version FROM eventstore.events WHERE stream_id = $1
), handled AS (
    INSERT INTO eventstore.handled_commands (command_id, stream_id, command_type, outcome)
    SELECT c.command_id, $1, c.command_type, c.outcome::jsonb
    FROM current, unnest($3::uuid[], $4::text[], $5::text[]) AS c(command_id, command_type, outcome)
    WHERE current.version = $2
    ON CONFLICT (command_id) DO NOTHING
    RETURNING command_id
), inserted AS (
    INSERT INTO eventstore.events (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)
    SELECT $1, $2 + e.ord, e.event_id, e.type, e.schema_version, e.data::jsonb, e.metadata::jsonb, e.occurred_at
    FROM current,
         unnest($6::uuid[], $7::text[], $8::int[], $9::text[], $10::text[], $11::timestamptz[])
             WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, occurred_at, ord)
    WHERE current.version = $2 AND (SELECT count(*) FROM handled) = cardinality($3::uuid[])
    RETURNING position
), queued AS (
    INSERT INTO eventstore.outbox (position) SELECT position FROM inserted RETURNING position
)
SELECT (SELECT version FROM current) AS version,
       ARRAY(SELECT command_id FROM handled) AS handled,
       ARRAY(SELECT position FROM queued ORDER BY position) AS positions
"""

_OUTCOME = "SELECT outcome FROM eventstore.handled_commands WHERE command_id = $1"


def positional(sql: str) -> tuple[str, list[str]]:
    """A SQLAlchemy `text()` statement's `:name` parameters as asyncpg's `$n` (and the names, in order).

    Lets asyncpg code run the very statement text another module keeps (one source of truth);
    `::type` casts are left alone.
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", number, sql), names


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
) -> list[int]:
    """Append atomically and return the global positions (as `EventStore.append`, for asyncpg).

    Raises `StreamVersionConflict` when the stream is not at `expected_version` and
    `CommandAlreadyHandled` when one of `commands` was recorded before; in both cases nothing was
    written. More than one command needs an open transaction on `conn` (the caller's), which
    must then be rolled back on either exception.
    """
    if len(commands) > 1 and not conn.is_in_transaction():
        raise ValueError("appending with several handled commands needs the caller's transaction")
    for event in events:
        if event.stream_id != stream_id:
            raise ValueError(f"event {event.id} belongs to {event.stream_id}, not {stream_id}")
    try:
        row = await conn.fetchrow(
            _APPEND,
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
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_stream_version_key":
            raise StreamVersionConflict(stream_id, expected_version) from exc
        raise
    assert row is not None
    if row["version"] != expected_version:
        raise StreamVersionConflict(stream_id, expected_version, row["version"])
    if len(row["handled"]) != len(commands):
        new = set(row["handled"])
        first = next(c for c in commands if c.command_id not in new)  # handled before
        raise CommandAlreadyHandled(first.command_id, _json(await conn.fetchval(_OUTCOME, first.command_id)) or {})
    return list(row["positions"])
