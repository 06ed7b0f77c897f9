"""The notifier's record of every email, and the facts it remembers from earlier events.

Revision ID: nt0001
Revises:
Create Date: 2026-11-27
"""

from alembic import op

revision = "nt0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS notifier")
    # One row per emailed event: the at-most-once record (docs/decisions/0070). `sending` is
    # committed BEFORE Mailgun is called and holds a claim with a lease; `sent` after its 200.
    # The message and event bodies are kept only until the email is settled (sent → NULL).
    op.execute(
        """
        CREATE TABLE notifier.emails (
            event_id        UUID        PRIMARY KEY,
            event_type      TEXT        NOT NULL,
            kind            TEXT        NOT NULL,
            user_id         TEXT,
            recipient       TEXT        NOT NULL,
            locale          TEXT        NOT NULL,
            message_id      TEXT        NOT NULL,
            status          TEXT        NOT NULL CHECK (status IN ('sending', 'parked', 'sent', 'dead')),
            message         JSONB,
            event           BYTEA,
            event_key       BYTEA,
            source          TEXT,
            claim           UUID,
            lease_until     TIMESTAMPTZ,
            next_attempt_at TIMESTAMPTZ,
            attempts        INTEGER     NOT NULL DEFAULT 0,
            claims          INTEGER     NOT NULL DEFAULT 0,
            last_error      TEXT,
            provider_id     TEXT,
            created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            updated_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            sent_at         TIMESTAMPTZ
        )
        """
    )
    op.execute("CREATE INDEX emails_parked_due_idx ON notifier.emails (next_attempt_at) WHERE status = 'parked'")
    op.execute("CREATE INDEX emails_sending_lease_idx ON notifier.emails (lease_until) WHERE status = 'sending'")
    op.execute("CREATE INDEX emails_recipient_idx ON notifier.emails (recipient, created_at)")
    # Plan names and refund days that later events do not repeat (keys `subscription:<id>`, `refund:<id>`).
    op.execute(
        """
        CREATE TABLE notifier.facts (
            key        TEXT        PRIMARY KEY,
            data       JSONB       NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE notifier.facts")
    op.execute("DROP TABLE notifier.emails")
    op.execute("DROP SCHEMA IF EXISTS notifier")
