"""The in-memory state projections read and change: read-model rows as plain dicts, per table.

The live projector fills a `State` with the rows a batch of events needs (loaded from the read
tables), the replay starts from an empty one; projections change rows through `put`, which marks
them dirty so only changed rows are written back. Values are typed as the columns are: `str` for
text and UUIDs (canonical lowercase), `datetime` for timestamptz, `int`, `bool`, and JSON text for
JSONB columns, so the writer can hand them to PostgreSQL without conversion.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Row = dict[str, Any]

FOREIGN: Row = {"user_id": object()}
"""`State.claim`'s answer for a key taken by another account's row (ids are never shared across streams)."""


class State:
    """Rows by table and primary key, with the set of keys changed since the last write."""

    __slots__ = ("rows", "dirty", "_subs_by_user")

    def __init__(self, tables: Iterable[str]) -> None:
        self.rows: dict[str, dict[Any, Row]] = {t: {} for t in tables}
        self.dirty: dict[str, set[Any]] = {t: set() for t in self.rows}
        self._subs_by_user: dict[str, set[str]] = {}

    def get(self, table: str, key: Any) -> Row | None:
        return self.rows[table].get(key)

    def owned(self, table: str, key: Any, user_id: str | None) -> Row | None:
        """The row if it belongs to `user_id`'s account: another stream's row is never touched."""
        row = self.rows[table].get(key)
        return row if row is not None and row["user_id"] == user_id else None

    def claim(self, table: str, key: Any, user_id: str | None) -> Row | None:
        """The account's row, None when the key is free, FOREIGN when another account owns it."""
        row = self.rows[table].get(key)
        if row is not None and row["user_id"] != user_id:
            return FOREIGN
        return row

    def put(self, table: str, key: Any, row: Row) -> None:
        """Store a (new or changed) row; it will be written back."""
        rows = self.rows[table]
        if table == "subscriptions" and key not in rows:
            self._subs_by_user.setdefault(row["user_id"], set()).add(key)
        rows[key] = row
        self.dirty[table].add(key)

    def load(self, table: str, key: Any, row: Row) -> None:
        """Add a row read from the database (clean: not written back unless changed)."""
        self.rows[table][key] = row
        if table == "subscriptions":
            self._subs_by_user.setdefault(row["user_id"], set()).add(key)

    def user_subscriptions(self, user_id: str) -> list[Row]:
        """Every subscription row of a user (the live projector loads them all for its accounts)."""
        subs = self.rows["subscriptions"]
        return [subs[k] for k in self._subs_by_user.get(user_id, ())]

    def dirty_rows(self, table: str) -> list[Row]:
        rows = self.rows[table]
        return [rows[k] for k in self.dirty[table]]

    def clear_dirty(self) -> None:
        for keys in self.dirty.values():
            keys.clear()

    def row_count(self) -> int:
        return sum(len(r) for r in self.rows.values())
