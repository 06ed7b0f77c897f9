"""The processor's own table: what the scheduler needs to know about each paid subscription.

`processor.schedule` holds one row per subscription that ever had a paid (or granted) period:
its status, period end, whether it renews (auto-renew, a saved card, not canceled at period
end) and the dunning facts (failed attempts, next retry, over). The processor writes it in the
SAME transaction as the events that change those facts (`payment_processor/adapters/schedule.py`), so
the scheduler never reads another service's tables and never misses a change a crash left
behind. Rows of ended subscriptions stay (status expired / canceled) as tombstones, so an
out-of-date writer (a rebuild racing the processor) can never bring one back: every write is
guarded by the stream version it was computed from.

The `sent_*` columns belong to the scheduler: which action it last published for the row, so
it does not publish the same command every tick (publishing it again would change nothing —
the command ids are deterministic — but would cost a read of the stream each time).

Revision ID: pp0002
Revises: pp0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "pp0002"
down_revision = "pp0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE processor.schedule (
            subscription_id      UUID        PRIMARY KEY,
            stream_id            TEXT        NOT NULL,
            user_id              TEXT        NOT NULL,
            status               TEXT        NOT NULL,
            period_end           TIMESTAMPTZ NOT NULL,
            auto_renew           BOOLEAN     NOT NULL,
            has_saved_method     BOOLEAN     NOT NULL,
            cancel_at_period_end BOOLEAN     NOT NULL,
            renewal_attempts     INTEGER     NOT NULL DEFAULT 0,
            next_retry_at        TIMESTAMPTZ,
            dunning_over         BOOLEAN     NOT NULL DEFAULT false,
            reminded_for         TIMESTAMPTZ,
            stream_version       BIGINT      NOT NULL,
            updated_at           TIMESTAMPTZ NOT NULL,
            sent_action          TEXT,
            sent_period_end      TIMESTAMPTZ,
            sent_attempt         INTEGER,
            sent_round           INTEGER,
            sent_at              TIMESTAMPTZ
        )
        """
    )
    # The scheduler only ever looks at live subscriptions, by period end or by next retry.
    op.execute(
        "CREATE INDEX schedule_live_period_end_idx ON processor.schedule (period_end) "
        "WHERE status IN ('active', 'past_due')"
    )
    op.execute(
        "CREATE INDEX schedule_live_next_retry_idx ON processor.schedule (next_retry_at) "
        "WHERE status = 'past_due' AND next_retry_at IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE processor.schedule")
