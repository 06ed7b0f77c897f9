"""`billing replay --until … --into SCHEMA` never destroys a schema it did not create.

A typo in `--into` used to be refused ("already exists") and then the clean-up dropped that very
schema with CASCADE: `processor`, `notifier`, `api`, `django` or last month's audit copy gone in
one command. Here the real CLI runs as a process against a fresh, migrated PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from infra.settings import Settings, plain_url
from projector.adapters.rebuild import Replay, ReplayError, ReplayOptions

ROOT = Path(__file__).resolve().parents[2]


def billing(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m billing_cli ARGS` (what `.venv/bin/billing` runs) against `settings`' database."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "billing_cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def database(fresh_database: Callable[..., Settings]) -> Settings:
    return fresh_database(prefix="replaysafe")


async def _sql(settings: Settings, *statements: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(settings.database_url))
    try:
        for statement in statements[:-1]:
            await conn.execute(statement)
        return await conn.fetch(statements[-1])
    finally:
        await conn.close()


async def _plant(settings: Settings, schema: str) -> None:
    """A row the operator would hate to lose, in `schema` (created when missing)."""
    await _sql(settings, f'CREATE SCHEMA IF NOT EXISTS "{schema}"',
               f'CREATE TABLE IF NOT EXISTS "{schema}".precious (note text)',
               f"INSERT INTO \"{schema}\".precious VALUES ('still here') RETURNING note")


async def _notes(settings: Settings, schema: str) -> list[str]:
    rows = await _sql(settings, f"SELECT to_regclass('\"{schema}\".precious') IS NOT NULL AS present")
    if not rows[0]["present"]:
        return []
    return [r["note"] for r in await _sql(settings, f'SELECT note FROM "{schema}".precious')]


async def test_an_existing_audit_copy_is_refused_and_left_intact(database: Settings) -> None:
    await _plant(database, "audit_nov")
    result = await asyncio.to_thread(billing, database, "replay", "--until", "1", "--into", "audit_nov", "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "already exists" in result.stdout and "nothing was changed" in result.stdout
    assert await _notes(database, "audit_nov") == ["still here"], "the refused replay dropped the schema"


@pytest.mark.parametrize("schema", ["processor", "notifier", "api", "django"])
async def test_the_products_own_schemas_are_refused_up_front(database: Settings, schema: str) -> None:
    await _plant(database, schema)
    result = await asyncio.to_thread(billing, database, "replay", "--until", "1", "--into", schema, "--quiet")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--into {schema!r} is one of the product's own schemas" in result.stdout
    assert await _notes(database, schema) == ["still here"]


async def test_every_schema_the_migrations_create_is_refused(database: Settings) -> None:
    """Whatever a migration adds later is covered too: every schema of a migrated database is refused."""
    rows = await _sql(database, "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('audit_nov', 'precious')")
    names = {r["nspname"] for r in rows} | {"django", "read_rebuild_12", "read_check_3", "read_old_9", "PROCESSOR"}
    assert {"eventstore", "read", "projector", "processor", "notifier", "api", "public"} <= names
    for name in sorted(names):
        if name.startswith("pg_temp") or name.startswith("pg_toast_temp"):
            continue  # another session's temporary schema (still refused by the pg_ prefix below)
        with pytest.raises(ReplayError, match="product's own schemas|system schema"):
            Replay(database, ReplayOptions(mode="until", until_position=1, into=name))
    with pytest.raises(ReplayError, match="system schema"):
        Replay(database, ReplayOptions(mode="until", until_position=1, into="pg_temp_3"))
    with pytest.raises(ReplayError, match="letters, digits and _"):
        Replay(database, ReplayOptions(mode="until", until_position=1, into="audit; DROP SCHEMA api"))
