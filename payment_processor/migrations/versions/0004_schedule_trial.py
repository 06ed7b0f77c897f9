"""`processor.schedule.trial`: a free trial is charged at its very end, and reminded before it.

A subscription that renews is normally charged `renewal_lead` before its period ends and never
gets an "expiring soon" email; a trial must not be charged a day early (it is free until its end)
and its customer is told before the first charge (docs/decisions/0118).

Revision ID: pp0004_cards
Revises: pp0003
Create Date: 2026-12-06
"""

from alembic import op

revision = "pp0004_cards"
down_revision = "pp0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE processor.schedule ADD COLUMN trial BOOLEAN NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE processor.schedule DROP COLUMN trial")
