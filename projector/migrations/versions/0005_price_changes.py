"""Price changes in the read models (docs/decisions/0120): a plan's scheduled prices, and the
price announced to a subscriber for its coming renewals. Filled by the projector; `billing replay`
rebuilds them like every other column.

Revision ID: rm0005_prices
Revises: rm0003_receipts
Create Date: 2026-12-06
"""

from alembic import op

revision = "rm0005_prices"
down_revision = "rm0003_receipts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE read.plans ADD COLUMN price_changes JSONB NOT NULL DEFAULT '[]'::jsonb")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN upcoming_price_minor BIGINT")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN upcoming_price_at TIMESTAMPTZ")


def downgrade() -> None:
    op.execute("ALTER TABLE read.subscriptions DROP COLUMN upcoming_price_at")
    op.execute("ALTER TABLE read.subscriptions DROP COLUMN upcoming_price_minor")
    op.execute("ALTER TABLE read.plans DROP COLUMN price_changes")
