"""Promo codes: `read.promo_codes` (terms, active, uses held and released), and the discount beside
the price on subscriptions (the latest charge's discount, discounted periods left) and payments.

Revision ID: rm0006_promo
Revises: rm0005_prices
Create Date: 2026-12-06
"""

from alembic import op

revision = "rm0006_promo"
down_revision = "rm0005_prices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE read.promo_codes (
            code                TEXT PRIMARY KEY,
            percent_off         INTEGER,
            amount_off_minor    BIGINT,
            currency            TEXT,
            periods             INTEGER NOT NULL,
            expires_at          TIMESTAMPTZ NOT NULL,
            max_redemptions     INTEGER,
            plan_ids            JSONB,
            active              BOOLEAN NOT NULL,
            deactivated_reason  TEXT,
            redemptions         INTEGER NOT NULL DEFAULT 0,
            released            INTEGER NOT NULL DEFAULT 0,
            created_at          TIMESTAMPTZ NOT NULL,
            updated_at          TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX promo_codes_created_idx ON read.promo_codes (created_at DESC)")
    op.execute(
        "ALTER TABLE read.subscriptions ADD COLUMN promo_code TEXT, "
        "ADD COLUMN discount_minor BIGINT NOT NULL DEFAULT 0, ADD COLUMN promo_periods_left INTEGER NOT NULL DEFAULT 0"
    )
    op.execute("ALTER TABLE read.payments ADD COLUMN discount_minor BIGINT NOT NULL DEFAULT 0, ADD COLUMN promo_code TEXT")


def downgrade() -> None:
    op.execute("ALTER TABLE read.payments DROP COLUMN discount_minor, DROP COLUMN promo_code")
    op.execute("ALTER TABLE read.subscriptions DROP COLUMN promo_code, DROP COLUMN discount_minor, DROP COLUMN promo_periods_left")
    op.execute("DROP TABLE read.promo_codes")
