"""Read models: plans, subscriptions, payments, refunds, command status, accounts.

The projector is the only writer; the command API and the admin only read. Money is kept as
integer minor units plus a currency, as in the event payloads' `Money`.

Revision ID: rm0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "rm0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS read")
    op.execute(
        """
        CREATE TABLE read.plans (
            plan_id      TEXT PRIMARY KEY,
            name         TEXT NOT NULL,
            price_minor  BIGINT NOT NULL,
            currency     TEXT NOT NULL,
            period_days  INTEGER NOT NULL,
            description  TEXT NOT NULL DEFAULT '',
            archived     BOOLEAN NOT NULL DEFAULT false,
            created_at   TIMESTAMPTZ NOT NULL,
            updated_at   TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE read.subscriptions (
            subscription_id        UUID PRIMARY KEY,
            user_id                TEXT NOT NULL,
            email                  TEXT,
            locale                 TEXT,
            plan_id                TEXT NOT NULL,
            plan_name              TEXT NOT NULL,
            status                 TEXT NOT NULL,
            auto_renew             BOOLEAN NOT NULL,
            cancel_at_period_end   BOOLEAN NOT NULL DEFAULT false,
            period_start           TIMESTAMPTZ,
            period_end             TIMESTAMPTZ,
            price_minor            BIGINT NOT NULL,
            amount_paid_minor      BIGINT NOT NULL DEFAULT 0,
            amount_refunded_minor  BIGINT NOT NULL DEFAULT 0,
            currency               TEXT NOT NULL,
            payment_method_title   TEXT,
            last_payment_id        UUID,
            renewal_attempt        INTEGER NOT NULL DEFAULT 0,
            next_retry_at          TIMESTAMPTZ,
            status_reason          TEXT,
            created_at             TIMESTAMPTZ NOT NULL,
            updated_at             TIMESTAMPTZ NOT NULL,
            canceled_at            TIMESTAMPTZ,
            expired_at             TIMESTAMPTZ
        )
        """
    )
    op.execute("CREATE INDEX subscriptions_user_idx ON read.subscriptions (user_id, created_at DESC)")
    op.execute("CREATE INDEX subscriptions_status_end_idx ON read.subscriptions (status, period_end)")
    op.execute("CREATE INDEX subscriptions_email_idx ON read.subscriptions (lower(email))")
    op.execute("CREATE INDEX subscriptions_plan_idx ON read.subscriptions (plan_id)")
    op.execute(
        """
        CREATE TABLE read.payments (
            payment_id           UUID PRIMARY KEY,
            subscription_id      UUID NOT NULL,
            user_id              TEXT NOT NULL,
            provider_payment_id  TEXT,
            purpose              TEXT NOT NULL,
            status               TEXT NOT NULL,
            amount_minor         BIGINT NOT NULL,
            currency             TEXT NOT NULL,
            confirmation_url     TEXT,
            reason               TEXT,
            paid_at              TIMESTAMPTZ,
            created_at           TIMESTAMPTZ NOT NULL,
            updated_at           TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX payments_user_idx ON read.payments (user_id, created_at DESC)")
    op.execute("CREATE INDEX payments_subscription_idx ON read.payments (subscription_id)")
    op.execute("CREATE INDEX payments_provider_idx ON read.payments (provider_payment_id)")
    op.execute("CREATE INDEX payments_status_idx ON read.payments (status, updated_at)")
    op.execute(
        """
        CREATE TABLE read.refunds (
            refund_id            UUID PRIMARY KEY,
            subscription_id      UUID NOT NULL,
            payment_id           UUID NOT NULL,
            user_id              TEXT NOT NULL,
            provider_refund_id   TEXT,
            status               TEXT NOT NULL,
            amount_minor         BIGINT NOT NULL,
            currency             TEXT NOT NULL,
            days_used            INTEGER,
            reason               TEXT,
            created_at           TIMESTAMPTZ NOT NULL,
            updated_at           TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX refunds_user_idx ON read.refunds (user_id, created_at DESC)")
    op.execute("CREATE INDEX refunds_subscription_idx ON read.refunds (subscription_id)")
    op.execute("CREATE INDEX refunds_payment_idx ON read.refunds (payment_id)")
    op.execute("CREATE INDEX refunds_status_idx ON read.refunds (status, updated_at)")
    op.execute(
        """
        CREATE TABLE read.commands (
            command_id    UUID PRIMARY KEY,
            user_id       TEXT,
            command_type  TEXT NOT NULL,
            status        TEXT NOT NULL,
            code          TEXT,
            reason        TEXT,
            outcome       JSONB NOT NULL DEFAULT '{}'::jsonb,
            actor_kind    TEXT,
            actor_id      TEXT,
            created_at    TIMESTAMPTZ NOT NULL,
            updated_at    TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX commands_user_idx ON read.commands (user_id, created_at DESC)")
    op.execute("CREATE INDEX commands_status_idx ON read.commands (status, updated_at)")
    op.execute(
        """
        CREATE TABLE read.accounts (
            user_id                TEXT PRIMARY KEY,
            email                  TEXT,
            locale                 TEXT,
            subscriptions_count    INTEGER NOT NULL DEFAULT 0,
            active_subscriptions   INTEGER NOT NULL DEFAULT 0,
            total_paid_minor       BIGINT NOT NULL DEFAULT 0,
            total_refunded_minor   BIGINT NOT NULL DEFAULT 0,
            currency               TEXT NOT NULL DEFAULT 'RUB',
            last_event_at          TIMESTAMPTZ,
            created_at             TIMESTAMPTZ NOT NULL,
            updated_at             TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX accounts_email_idx ON read.accounts (lower(email))")


def downgrade() -> None:
    op.execute("DROP SCHEMA read CASCADE")
