"""The PostgreSQL event store: append with an expected version, read a stream, read everything.

One append-only table holds every event of every stream. An append states the version it
expects the stream to be at; a concurrent writer makes it fail with `StreamVersionConflict`
(the caller re-reads and decides again — never overwrites). The same transaction records the
positions in the outbox for the relay and, for a command, the handled-command row, so a command
handled twice appends nothing the second time and returns the first outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas import Envelope, parse_envelope


class StreamVersionConflict(Exception):
    """Another writer appended to the stream first; re-read it and decide again."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(f"stream {stream_id} is not at version {expected} (actual: {actual if actual is not None else 'moved on'})")


class CommandAlreadyHandled(Exception):
    """The command id was handled before; `outcome` is what it produced the first time."""

    def __init__(self, command_id: uuid.UUID, outcome: dict[str, Any]) -> None:
        self.command_id, self.outcome = command_id, outcome
        super().__init__(f"command {command_id} was already handled")


@dataclass(frozen=True, slots=True)
class HandledCommand:
    """Recorded with the events a command produced, in the same transaction."""

    command_id: uuid.UUID
    command_type: str
    outcome: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: the envelope's fields plus its place in the log."""

    position: int
    stream_id: str
    stream_version: int
    event_id: uuid.UUID
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime

    def envelope(self) -> Envelope:
        """The typed envelope, with old schema versions upcast."""
        return parse_envelope(self.envelope_dict())

    def envelope_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.event_id),
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat(),
            "stream_id": self.stream_id,
            "data": self.data,
            "metadata": self.metadata,
        }

    def to_wire(self) -> bytes:
        """The JSON published to Kafka (the envelope as stored)."""
        return orjson.dumps(self.envelope_dict())

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Headers that let consumers order and de-duplicate without parsing the body."""
        return [
            ("event_id", str(self.event_id).encode()),
            ("type", self.type.encode()),
            ("stream_version", str(self.stream_version).encode()),
            ("position", str(self.position).encode()),
            ("correlation_id", str(self.metadata.get("correlation_id") or "").encode()),
        ]


_COLUMNS = "position, stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at, recorded_at"

# One round trip: check the expected version, insert every event, queue them for the relay.
# A concurrent append of the same version trips the unique (stream_id, stream_version) index.
_APPEND = text(
    """
    WITH current AS (
        SELECT coalesce(max(stream_version), 0) AS version
        FROM eventstore.events WHERE stream_id = :stream_id
    ), inserted AS (
        INSERT INTO eventstore.events
            (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)
        SELECT :stream_id, :expected + e.ord, e.event_id, e.type, e.schema_version,
               e.data::jsonb, e.metadata::jsonb, e.occurred_at
        FROM current,
             unnest(CAST(:event_ids AS uuid[]), CAST(:types AS text[]), CAST(:schema_versions AS int[]),
                    CAST(:datas AS text[]), CAST(:metadatas AS text[]), CAST(:occurred AS timestamptz[]))
                 WITH ORDINALITY AS e(event_id, type, schema_version, data, metadata, occurred_at, ord)
        WHERE current.version = :expected
        RETURNING position
    )
    INSERT INTO eventstore.outbox (position) SELECT position FROM inserted RETURNING position
    """
)

_RECORD_COMMAND = text(
    """
    INSERT INTO eventstore.handled_commands (command_id, stream_id, command_type, outcome)
    VALUES (:command_id, :stream_id, :command_type, CAST(:outcome AS jsonb))
    ON CONFLICT (command_id) DO NOTHING
    RETURNING command_id
    """
)


def _row_to_event(row: Any) -> RecordedEvent:
    return RecordedEvent(*row)


class EventStore:
    """Append and read events; pass `conn` to take part in the caller's transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def _connection(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        if conn is not None:
            yield conn
        else:
            async with self.engine.begin() as own:
                yield own

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Envelope],
        *,
        command: HandledCommand | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[int]:
        """Append atomically and return the global positions.

        Raises `StreamVersionConflict` when the stream is not at `expected_version` (the
        transaction is then unusable: retry in a new one) and `CommandAlreadyHandled` when
        `command` was recorded before (nothing is appended).
        """
        for event in events:
            if event.stream_id != stream_id:
                raise ValueError(f"event {event.id} belongs to {event.stream_id}, not {stream_id}")
        async with self._connection(conn) as c:
            if command is not None:
                recorded = await c.execute(
                    _RECORD_COMMAND,
                    {
                        "command_id": command.command_id,
                        "stream_id": stream_id,
                        "command_type": command.command_type,
                        "outcome": orjson.dumps(command.outcome, default=str).decode(),
                    },
                )
                if recorded.first() is None:
                    raise CommandAlreadyHandled(command.command_id, await self.handled_outcome(command.command_id, conn=c) or {})
            if not events:
                return []
            dumped = [e.model_dump(mode="json") for e in events]
            params = {
                "stream_id": stream_id,
                "expected": expected_version,
                "event_ids": [e.id for e in events],
                "types": [e.type for e in events],
                "schema_versions": [e.schema_version for e in events],
                "datas": [orjson.dumps(d["data"]).decode() for d in dumped],
                "metadatas": [orjson.dumps(d["metadata"]).decode() for d in dumped],
                "occurred": [e.occurred_at for e in events],
            }
            try:
                result = await c.execute(_APPEND, params)
            except IntegrityError as exc:
                if "events_stream_version_key" in str(exc.orig):
                    raise StreamVersionConflict(stream_id, expected_version) from exc
                raise
            positions = sorted(row[0] for row in result)
            if len(positions) != len(events):
                actual = await self._version(c, stream_id)
                raise StreamVersionConflict(stream_id, expected_version, actual)
            return positions

    async def _version(self, conn: AsyncConnection, stream_id: str) -> int:
        result = await conn.execute(
            text("SELECT coalesce(max(stream_version), 0) FROM eventstore.events WHERE stream_id = :s"), {"s": stream_id}
        )
        return int(result.scalar_one())

    async def stream_version(self, stream_id: str, *, conn: AsyncConnection | None = None) -> int:
        async with self._connection(conn) as c:
            return await self._version(c, stream_id)

    async def read_stream(
        self, stream_id: str, *, after_version: int = 0, conn: AsyncConnection | None = None
    ) -> list[RecordedEvent]:
        """Every event of one stream after `after_version`, in version order."""
        async with self._connection(conn) as c:
            result = await c.execute(
                text(
                    f"SELECT {_COLUMNS} FROM eventstore.events "
                    "WHERE stream_id = :s AND stream_version > :v ORDER BY stream_version"
                ),
                {"s": stream_id, "v": after_version},
            )
            return [_row_to_event(r) for r in result]

    async def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int = 1000,
        until_position: int | None = None,
        conn: AsyncConnection | None = None,
    ) -> list[RecordedEvent]:
        """One page of the whole log after `after_position`, in position order."""
        async with self._connection(conn) as c:
            result = await c.execute(
                text(
                    f"SELECT {_COLUMNS} FROM eventstore.events WHERE position > :p "
                    "AND (CAST(:until AS bigint) IS NULL OR position <= CAST(:until AS bigint)) "
                    "ORDER BY position LIMIT :limit"
                ),
                {"p": after_position, "limit": limit, "until": until_position},
            )
            return [_row_to_event(r) for r in result]

    async def iter_all(
        self, *, after_position: int = 0, page_size: int = 5000, until_position: int | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Pages of the whole log, so a million events never sit in memory at once."""
        position = after_position
        while True:
            page = await self.read_all(after_position=position, limit=page_size, until_position=until_position)
            if not page:
                return
            yield page
            position = page[-1].position

    async def last_position(self, *, conn: AsyncConnection | None = None) -> int:
        async with self._connection(conn) as c:
            result = await c.execute(text("SELECT coalesce(max(position), 0) FROM eventstore.events"))
            return int(result.scalar_one())

    async def handled_outcome(self, command_id: uuid.UUID, *, conn: AsyncConnection | None = None) -> dict[str, Any] | None:
        async with self._connection(conn) as c:
            result = await c.execute(
                text("SELECT outcome FROM eventstore.handled_commands WHERE command_id = :c"), {"c": command_id}
            )
            return result.scalar_one_or_none()
