"""The event store: one append-only table, the outbox, handled commands, consumer tracking.

Revision ID: es0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "es0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS eventstore")
    op.execute(
        """
        CREATE TABLE eventstore.events (
            position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            stream_id       TEXT        NOT NULL,
            stream_version  INTEGER     NOT NULL CHECK (stream_version > 0),
            event_id        UUID        NOT NULL,
            type            TEXT        NOT NULL,
            schema_version  INTEGER     NOT NULL,
            data            JSONB       NOT NULL,
            metadata        JSONB       NOT NULL,
            occurred_at     TIMESTAMPTZ NOT NULL,
            recorded_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
            CONSTRAINT events_event_id_key UNIQUE (event_id)
        )
        """
    )
    op.execute("CREATE INDEX events_recorded_at_idx ON eventstore.events (recorded_at)")
    # Positions of committed events not yet published to Kafka; see docs/decisions on the relay.
    op.execute("CREATE TABLE eventstore.outbox (position BIGINT PRIMARY KEY)")
    op.execute(
        """
        CREATE TABLE eventstore.handled_commands (
            command_id  UUID        PRIMARY KEY,
            stream_id   TEXT        NOT NULL,
            command_type TEXT       NOT NULL,
            outcome     JSONB       NOT NULL,
            handled_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE eventstore.tracking (
            consumer    TEXT        NOT NULL,
            event_id    UUID        NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (consumer, event_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA eventstore CASCADE")
