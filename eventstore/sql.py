"""SQL with `:name` parameters on plain asyncpg: the event store's statements and the hot read paths.

Named parameters keep statements readable; asyncpg wants `$n`. Owned by the store, which imports
nothing of ours but `schemas`; services that run their own statements on asyncpg use it too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def positional(sql: str, *, start: int = 1) -> tuple[str, tuple[str, ...]]:
    """`:name` placeholders → asyncpg's `$n` (computed once per statement text), and the names in order.

    Lets hot paths keep readable named parameters while running on plain asyncpg, whose
    per-statement CPU is a fraction of an ORM round trip; `::type` casts are left alone. Numbers
    begin at `start`, to follow other parameters (the event store's side writes).
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + start}"

    return _NAMED.sub(number, sql), tuple(names)


def bind(sql: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """(asyncpg statement, arguments) for SQL with `:name` placeholders."""
    statement, names = positional(sql)
    return statement, [params[name] for name in names]
