"""Reading and writing read-model rows and stream positions over one asyncpg connection.

Rows are bound as typed arrays (`unnest($1::uuid[], ...)`) for upserts and written with binary
COPY into fresh rebuild tables, so a thousand rows cost one round trip, not a thousand. Every
function takes the schema it works on: the live `read` schema, a `read_rebuild_<n>` being built,
or a point-in-time schema for an audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

import asyncpg

from projector.domain.projections import TABLES
from projector.domain.projections.base import TableSpec
from projector.domain.state import Row, State

LIVE_SCHEMA = "read"
LIVE_POSITIONS = "projector.stream_positions"

# Session-level: timestamps come back in UTC whatever the server's default is.
SERVER_SETTINGS = {"timezone": "UTC"}


def quote_ident(name: str) -> str:
    if not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def _select_list(spec: TableSpec) -> str:
    # uuid and jsonb come back as text: state keys and JSON values are plain strings
    return ", ".join(f"{c}::text AS {c}" if t in ("uuid", "jsonb") else c for c, t in spec.columns)


async def load_rows(
    conn: asyncpg.Connection, schema: str, table: str, column: str, keys: Iterable[Any], column_type: str
) -> list[Row]:
    keys = list(keys)
    if not keys:
        return []
    spec = TABLES[table]
    rows = await conn.fetch(
        f"SELECT {_select_list(spec)} FROM {quote_ident(schema)}.{table} WHERE {column} = ANY($1::{column_type}[])",
        keys,
    )
    return [dict(r.items()) for r in rows]


def _records(spec: TableSpec, rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    getter = itemgetter(*spec.column_names)
    return [getter(r) for r in rows]


def _upsert_sql(schema: str, spec: TableSpec) -> str:
    cols = ", ".join(spec.column_names)
    arrays = ", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(spec.columns, start=1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in spec.column_names if c != spec.key)
    return (
        f"INSERT INTO {quote_ident(schema)}.{spec.name} ({cols}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({spec.key}) DO UPDATE SET {updates}"
    )


async def upsert_rows(conn: asyncpg.Connection, schema: str, table: str, rows: Sequence[Row]) -> None:
    """Insert or replace whole rows (the projection computed every column)."""
    if not rows:
        return
    spec = TABLES[table]
    columns = list(zip(*_records(spec, rows)))
    await conn.execute(_upsert_sql(schema, spec), *columns)


async def copy_rows(conn: asyncpg.Connection, schema: str, table: str, rows: Sequence[Row]) -> None:
    """Binary COPY into a table known to hold none of these keys (a rebuild being written)."""
    if not rows:
        return
    spec = TABLES[table]
    await conn.copy_records_to_table(
        table, records=_records(spec, rows), columns=list(spec.column_names), schema_name=schema
    )


async def write_dirty(conn: asyncpg.Connection, schema: str, state: State) -> int:
    """Upsert every changed row; returns how many."""
    written = 0
    for table in TABLES:
        rows = state.dirty_rows(table)
        await upsert_rows(conn, schema, table, rows)
        written += len(rows)
    state.clear_dirty()
    return written


# ---------------------------------------------------------------------- stream positions


async def lock_positions(conn: asyncpg.Connection, positions_table: str, streams: Sequence[str]) -> dict[str, int]:
    """Lock the streams' position rows (creating missing ones at 0), in a fixed order, and read them.

    Two projector instances (a rebalance in progress) or the replay's catch-up can never apply
    the same stream at once: the second waits here, then sees the first one's versions.
    """
    ordered = sorted(set(streams))
    await conn.execute(
        f"INSERT INTO {positions_table} (stream_id, version) "
        "SELECT s, 0 FROM unnest($1::text[]) AS s ORDER BY s ON CONFLICT (stream_id) DO NOTHING",
        ordered,
    )
    rows = await conn.fetch(
        f"SELECT stream_id, version FROM {positions_table} WHERE stream_id = ANY($1::text[]) "
        "ORDER BY stream_id FOR UPDATE",
        ordered,
    )
    return {r[0]: r[1] for r in rows}


async def save_positions(
    conn: asyncpg.Connection, positions_table: str, versions: dict[str, tuple[int, int | None]]
) -> None:
    """Record `{stream: (version, position)}`."""
    if not versions:
        return
    streams = list(versions)
    await conn.execute(
        f"INSERT INTO {positions_table} (stream_id, version, position, updated_at) "
        "SELECT s, v, p, clock_timestamp() FROM unnest($1::text[], $2::int[], $3::bigint[]) AS u(s, v, p) "
        "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, position = EXCLUDED.position, "
        "updated_at = EXCLUDED.updated_at",
        streams,
        [versions[s][0] for s in streams],
        [versions[s][1] for s in streams],
    )


async def copy_positions(
    conn: asyncpg.Connection, positions_table_schema: str, positions_table_name: str, versions: dict[str, tuple[int, int | None]]
) -> None:
    if not versions:
        return
    await conn.copy_records_to_table(
        positions_table_name,
        records=[(s, v, p) for s, (v, p) in versions.items()],
        columns=["stream_id", "version", "position"],
        schema_name=positions_table_schema,
    )
