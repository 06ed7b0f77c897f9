"""Trials and card checks in the read models: `plans.trial_days`, `subscriptions.trial`.

A plan may start with free days (`trial_days`, 0 = none); a subscription in its free trial shows
`trial` until its first paid renewal (docs/decisions/0118).

Revision ID: rm0003_cards
Revises: rm0002
Create Date: 2026-12-06
"""

from alembic import op

revision = "rm0003_cards"
down_revision = "rm0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE read.plans ADD COLUMN trial_days INTEGER NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE read.subscriptions ADD COLUMN trial BOOLEAN NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE read.subscriptions DROP COLUMN trial")
    op.execute("ALTER TABLE read.plans DROP COLUMN trial_days")
