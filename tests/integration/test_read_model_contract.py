"""The read models have one owner and two readers: this checks the readers against the owner.

The projector's migrations create the `read` tables; the command API queries them in raw SQL
(`command_api/adapters/read_models.py`) and the admin maps them with unmanaged Django models
(`admin/billing/models.py`). Neither reader is checked by its own tests against the real schema
until a page or an endpoint happens to run the one statement that drifted. Here every SQL
statement the API's read-model module contains is prepared (PostgreSQL resolves every table and
column without running it) and every column every admin model maps is looked up, on a database
migrated from scratch.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import asyncpg
import psycopg
import pytest

from eventstore.sql import positional
from infra.settings import plain_url

ROOT = Path(__file__).resolve().parents[2]
SQL_START = ("select", "with", "insert", "update", "delete")


def _sql_literals(path: Path) -> list[str]:
    """Every string constant in the module that is an SQL statement."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if text.lower().startswith(SQL_START) and " from " in f" {text.lower()} ".replace("\n", " "):
                found.append(text)
    return found


def test_the_api_reads_only_what_the_projector_writes(admin_database) -> None:
    statements = _sql_literals(ROOT / "command_api" / "adapters" / "read_models.py")
    assert len(statements) >= 10, "the API's read-model queries were not found"

    async def prepare_all() -> list[str]:
        conn = await asyncpg.connect(plain_url(admin_database.database_url), timeout=10)
        problems = []
        try:
            for sql in statements:
                statement, _ = positional(sql)  # `:name` → `$n`, as the API binds them
                try:
                    await conn.prepare(statement)
                except asyncpg.PostgresError as exc:
                    problems.append(f"{exc.__class__.__name__}: {exc} in\n{sql}")
        finally:
            await conn.close()
        return problems

    problems = asyncio.run(prepare_all())
    assert not problems, "\n\n".join(problems)


def test_the_admin_maps_only_columns_the_projector_made(admin_site, admin_database) -> None:
    def mapped() -> list[tuple[str, str, str, str]]:
        from django.apps import apps

        columns = []
        for model in apps.get_app_config("billing").get_models():
            if model._meta.managed:
                continue
            schema, table = model._meta.db_table.replace('"', "").split(".")
            columns += [(model.__name__, schema, table, field.column) for field in model._meta.concrete_fields]
        return columns

    columns = admin_site.executor.submit(mapped).result(timeout=30)
    assert len({c[0] for c in columns}) >= 6, "the admin's unmanaged models were not found"
    with psycopg.connect(plain_url(admin_database.database_url), connect_timeout=5) as conn:
        existing = {
            (schema, table, column)
            for schema, table, column in conn.execute(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns"
            ).fetchall()
        }
    missing = [f"{model}: {schema}.{table}.{column}" for model, schema, table, column in columns if (schema, table, column) not in existing]
    assert not missing, f"admin models map columns the migrations never created: {missing}"


@pytest.mark.parametrize("bad", ["SELECT no_such_column FROM read.plans", "SELECT * FROM read.no_such_table"])
def test_a_drifted_statement_would_be_caught(admin_database, bad: str) -> None:
    """The check is real: PostgreSQL refuses to prepare a statement naming what does not exist."""

    async def prepare() -> None:
        conn = await asyncpg.connect(plain_url(admin_database.database_url), timeout=10)
        try:
            await conn.prepare(bad)
        finally:
            await conn.close()

    with pytest.raises(asyncpg.PostgresError):
        asyncio.run(prepare())
