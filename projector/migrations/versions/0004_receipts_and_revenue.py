"""Receipts on payments, refunds and plans; the revenue report's monthly deltas (decisions 0123, 0124).

New columns start empty for rows projected before them, and `read.revenue` starts empty: run
`billing replay` (a rebuild and swap) once after upgrading to fill them from the event log.

Revision ID: rm0003_receipts
Revises: rm0003_cards
Create Date: 2026-12-06
"""

from alembic import op

revision = "rm0003_receipts"
down_revision = "rm0003_cards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE read.plans ADD COLUMN vat_code INTEGER, ADD COLUMN payment_subject TEXT, ADD COLUMN payment_mode TEXT")
    for table in ("payments", "refunds"):
        op.execute(f"ALTER TABLE read.{table} ADD COLUMN receipt JSONB, ADD COLUMN receipt_registration TEXT")
    op.execute(
        """
        CREATE TABLE read.revenue (
            row_key             TEXT PRIMARY KEY,
            user_id             TEXT NOT NULL,
            month               TEXT NOT NULL,
            plan_id             TEXT NOT NULL,
            currency            TEXT NOT NULL,
            payments            INTEGER NOT NULL DEFAULT 0,
            revenue_minor       BIGINT NOT NULL DEFAULT 0,
            refunds             INTEGER NOT NULL DEFAULT 0,
            refunded_minor      BIGINT NOT NULL DEFAULT 0,
            new_subscribers     INTEGER NOT NULL DEFAULT 0,
            churned             INTEGER NOT NULL DEFAULT 0,
            renewed             INTEGER NOT NULL DEFAULT 0,
            renewals_failed     INTEGER NOT NULL DEFAULT 0,
            renewals_recovered  INTEGER NOT NULL DEFAULT 0,
            active_delta        INTEGER NOT NULL DEFAULT 0,
            mrr_delta_minor     BIGINT NOT NULL DEFAULT 0,
            updated_at          TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX revenue_user_idx ON read.revenue (user_id)")
    op.execute("CREATE INDEX revenue_month_plan_idx ON read.revenue (month, plan_id)")
    op.execute(
        """
        CREATE TABLE read.revenue_subscriptions (
            subscription_id  UUID PRIMARY KEY,
            user_id          TEXT NOT NULL,
            plan_id          TEXT NOT NULL,
            currency         TEXT NOT NULL,
            counted          BOOLEAN NOT NULL,
            monthly_minor    BIGINT NOT NULL,
            failed_month     TEXT,
            updated_at       TIMESTAMPTZ NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE read.revenue_subscriptions")
    op.execute("DROP TABLE read.revenue")
    for table in ("payments", "refunds"):
        op.execute(f"ALTER TABLE read.{table} DROP COLUMN receipt, DROP COLUMN receipt_registration")
    op.execute("ALTER TABLE read.plans DROP COLUMN vat_code, DROP COLUMN payment_subject, DROP COLUMN payment_mode")
