"""Plan switching (docs/decisions/0119): a plan's product, a subscription's product, what paid
its current period after an upgrade, and a downgrade scheduled for the period end.

Plans created before products existed belong to the default product (`cinema`), as their
PlanCreated events read without the field.

Revision ID: rm0007_switch
Revises: rm0006_promo
Create Date: 2026-12-06
"""

from alembic import op

revision = "rm0007_switch"
down_revision = "rm0006_promo"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE read.plans ADD COLUMN product TEXT NOT NULL DEFAULT 'cinema'")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN product TEXT NOT NULL DEFAULT 'cinema'")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN period_paid_minor BIGINT")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN pending_plan_id TEXT")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN pending_plan_name TEXT")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN pending_price_minor BIGINT")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN pending_effective_at TIMESTAMPTZ")


def downgrade() -> None:
    for column in ("pending_effective_at", "pending_price_minor", "pending_plan_name", "pending_plan_id", "period_paid_minor", "product"):
        op.execute(f"ALTER TABLE read.subscriptions DROP COLUMN {column}")
    op.execute("ALTER TABLE read.plans DROP COLUMN product")
