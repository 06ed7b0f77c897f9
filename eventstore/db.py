"""The async database engine every service shares the shape of.

One engine per process, built in the service's bootstrap from `Settings` (never at import),
with orjson for JSONB and a bounded pool. `transaction()` is the unit of work: a consumer's
effect and its idempotency record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from eventstore.settings import Settings


def _json_dumps(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def create_engine(
    settings: Settings, *, pool_size: int | None = None, application_name: str = "billing", pre_ping: bool = True
) -> AsyncEngine:
    """An asyncpg-backed engine with timeouts, so a stuck server cannot hang a worker forever.

    `pre_ping=False` saves a round trip per checkout for hot request paths that answer a failed
    query with a retryable error anyway (SQLAlchemy then invalidates the whole pool at once).
    """
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        pool_timeout=30,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        connect_args={
            "timeout": 10,
            "command_timeout": 60,
            "server_settings": {"application_name": application_name},
        },
    )


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside one transaction: commit on success, roll back on any error."""
    async with engine.begin() as conn:
        yield conn
