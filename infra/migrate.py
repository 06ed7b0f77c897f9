"""Alembic migrations, one independent history per package.

Each package that owns tables (`eventstore`, `projector`, `notifier`, ...) keeps its own
`migrations/` folder and its own version table (`alembic_version_<package>`), so services evolve
their schemas without sharing one linear history. `python -m infra.migrate` upgrades them all;
an advisory lock keeps two processes from migrating at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.pool import NullPool

from infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_LOCK_KEY = 7_220_431_001


def packages_with_migrations() -> list[str]:
    """Every top-level package that has a `migrations/env.py`, the event store first."""
    found = sorted(p.parent.parent.name for p in ROOT.glob("*/migrations/env.py"))
    return sorted(found, key=lambda name: (name != "eventstore", name))


def alembic_config(settings: Settings, package: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / package / "migrations"))
    cfg.set_main_option("sqlalchemy.url", settings.psycopg_url.replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{package}"
    return cfg


def upgrade(settings: Settings, packages: list[str] | None = None, revision: str = "head") -> None:
    for package in packages or packages_with_migrations():
        command.upgrade(alembic_config(settings, package), revision)


def downgrade(settings: Settings, package: str, revision: str) -> None:
    command.downgrade(alembic_config(settings, package), revision)


def run_env() -> None:
    """The body of every package's `migrations/env.py` (online mode only)."""
    from alembic import context

    config = context.config
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    with engine.connect() as conn:
        # Two services starting together must not both create the same tables.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.configure(connection=conn, version_table=config.attributes["version_table"])
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()


def main(argv: list[str]) -> int:
    """`python -m infra.migrate [PACKAGE ...]` (the deployment's migration job): logs in the services' format."""
    from infra.logging import configure_logging, get_logger

    configure_logging("migrate")
    settings = Settings()
    packages = argv or None
    upgrade(settings, packages)
    get_logger("infra.migrate").info("migrated", packages=packages or packages_with_migrations())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
