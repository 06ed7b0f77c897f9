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


def test_unanswered_upgrade_payments_get_a_janitor_operation(fresh_database) -> None:  # type: ignore[no-untyped-def]
    """Before pp0007 an upgrade opened no janitor operation (decision 0129): the revision opens
    one, due at once, for every upgrade payment no PaymentSucceeded or PaymentFailed answered."""
    import json
    import uuid

    settings = fresh_database(migrate=False)
    upgrade(settings, [p for p in packages_with_migrations() if p != "payment_processor"])
    upgrade(settings, ["payment_processor"], "pp0006_recon")
    unanswered, failed, succeeded, renewal = (uuid.uuid4() for _ in range(4))
    rows = [
        ("acct-1", "UpgradeStarted", unanswered), ("acct-1", "PaymentStateUnknown", unanswered),
        ("acct-2", "UpgradeStarted", failed), ("acct-2", "PaymentFailed", failed),
        ("acct-3", "UpgradeStarted", succeeded), ("acct-3", "PaymentSucceeded", succeeded),
        ("acct-4", "RenewalStarted", renewal),  # not an upgrade: its row is the old code's business
    ]
    engine = sa.create_engine(settings.psycopg_url)
    with engine.begin() as conn:
        versions: dict[str, int] = {}
        for stream, type_, payment in rows:
            versions[stream] = versions.get(stream, 0) + 1
            conn.execute(sa.text(
                "INSERT INTO eventstore.events (stream_id, stream_version, event_id, type, schema_version, data, metadata, occurred_at)"
                " VALUES (:s, :v, :id, :t, 1, CAST(:d AS jsonb), '{}'::jsonb, now())"
            ), {"s": stream, "v": versions[stream], "id": uuid.uuid4(), "t": type_, "d": json.dumps({"payment_id": str(payment)})})
    upgrade(settings, ["payment_processor"])
    with engine.connect() as conn:
        opened = conn.execute(sa.text(
            "SELECT operation_id, kind, stream_id, next_check_at <= now() FROM processor.open_operations")).all()
    engine.dispose()
    assert [tuple(r) for r in opened] == [(unanswered, "payment", "acct-1", True)]
