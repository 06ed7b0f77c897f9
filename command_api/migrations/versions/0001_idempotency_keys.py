"""The command API's own table: Idempotency-Key records (Stripe semantics) and accepted command ids.

One row per (scope, key): scope is the caller (the token's `sub`), so two users can use the same
key. The row is claimed before anything is published (`in_flight`, with an owner token and a lock
time), then holds the first response (status, body, headers) to replay it for at least 24 hours.
`command_id` lets `GET /v1/commands/{id}` answer `accepted` before the projector has seen the command.

Revision ID: api0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "api0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS api")
    op.execute(
        """
        CREATE TABLE api.idempotency_keys (
            scope             TEXT        NOT NULL,
            key               TEXT        NOT NULL,
            request_hash      TEXT        NOT NULL,
            method            TEXT        NOT NULL,
            path              TEXT        NOT NULL,
            command_id        UUID        NOT NULL,
            command_type      TEXT        NOT NULL,
            state             TEXT        NOT NULL CHECK (state IN ('in_flight', 'completed')),
            owner             UUID,
            locked_at         TIMESTAMPTZ,
            accepted_at       TIMESTAMPTZ,
            response_status   INTEGER,
            response_body     JSONB,
            response_headers  JSONB,
            created_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            completed_at      TIMESTAMPTZ,
            expires_at        TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (scope, key)
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX idempotency_keys_command_idx ON api.idempotency_keys (command_id)")
    op.execute("CREATE INDEX idempotency_keys_expires_idx ON api.idempotency_keys (expires_at)")


def downgrade() -> None:
    op.execute("DROP SCHEMA api CASCADE")
