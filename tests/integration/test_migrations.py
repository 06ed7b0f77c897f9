"""Alembic migrations apply to an empty database and roll back cleanly."""

from __future__ import annotations

import sqlalchemy as sa

from infra.migrate import downgrade, packages_with_migrations, upgrade


def _schemas(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = set(conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata")).scalars())
    engine.dispose()
    return names


def test_every_migration_applies_and_rolls_back(fresh_database) -> None:  # type: ignore[no-untyped-def]
    settings = fresh_database()
    upgrade(settings)
    assert "eventstore" in _schemas(settings.psycopg_url)
    for package in reversed(packages_with_migrations()):
        downgrade(settings, package, "base")
    assert "eventstore" not in _schemas(settings.psycopg_url)
    upgrade(settings)
    assert "eventstore" in _schemas(settings.psycopg_url)
