"""asyncpg, SQLAlchemy (async) and psycopg against the real PostgreSQL the stack runs."""

from __future__ import annotations

import uuid

import asyncpg
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.settings import plain_url


async def test_asyncpg_round_trip_and_rollback(settings):
    conn = await asyncpg.connect(plain_url(settings.database_url), timeout=10)
    try:
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 160000
        table = f"t_{uuid.uuid4().hex[:10]}"
        await conn.execute(f"CREATE TEMP TABLE {table} (id uuid PRIMARY KEY, amount bigint NOT NULL)")
        key = uuid.uuid4()
        await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", key, 29900)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", uuid.uuid4(), 1)
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", key, 2)  # duplicate: whole tx rolls back
        assert await conn.fetch(f"SELECT id, amount FROM {table}") == [(key, 29900)]
    finally:
        await conn.close()


async def test_sqlalchemy_async_engine_on_a_fresh_database(fresh_database):
    fresh = fresh_database(migrate=False)
    engine = create_async_engine(fresh.sqlalchemy_url, pool_size=2)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
            await conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), [{"b": "one"}, {"b": "два"}])
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT body FROM notes ORDER BY id"))).scalars().all()
            name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
        assert rows == ["one", "два"]
        assert name == fresh.database_url.rsplit("/", 1)[1]
    finally:
        await engine.dispose()


def test_psycopg_sees_the_same_server(settings):
    with psycopg.connect(settings.psycopg_url.replace("postgresql+psycopg", "postgresql"), connect_timeout=5) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == settings.database_url.rsplit("/", 1)[1]


async def test_fresh_database_is_isolated_and_migrated(fresh_database, settings):
    first, second = fresh_database(), fresh_database(migrate=False)
    assert first.database_url != second.database_url != settings.database_url
    migrated = await asyncpg.connect(plain_url(first.database_url), timeout=10)
    empty = await asyncpg.connect(plain_url(second.database_url), timeout=10)
    try:
        assert await migrated.fetchval("SELECT to_regclass('eventstore.events') IS NOT NULL")
        assert not await empty.fetchval("SELECT to_regclass('eventstore.events') IS NOT NULL")
    finally:
        await migrated.close()
        await empty.close()
