"""What every projection module declares: its table (name, key, typed columns) and `apply`.

Projections are plain functions of (state, event). Two rules keep the live projector and the
replay identical (docs/decisions/0051-stream-local-projections.md):
- a row depends only on events of ONE stream (account rows on `account-<user>`, plan rows on
  `plan-<plan>`), so the order Kafka delivers different streams in never matters;
- every time written comes from the event (`occurred_at` or a payload field), never from now().
"""

from __future__ import annotations

from dataclasses import dataclass

# PostgreSQL column types the writer knows how to bind.
TEXT, UUID, TIMESTAMPTZ, BIGINT, INTEGER, BOOLEAN, JSONB = "text", "uuid", "timestamptz", "bigint", "integer", "boolean", "jsonb"


@dataclass(frozen=True)
class TableSpec:
    """A read-model table: `read.<name>`, its primary key and its columns in write order."""

    name: str
    key: str
    columns: tuple[tuple[str, str], ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)
