"""Open a janitor operation for every upgrade payment still without a final answer.

Before this revision `UpgradeStarted` opened no row in `processor.open_operations`
(docs/decisions/0129): an upgrade whose create went unanswered was never asked about again, its
command never ended, and its open payment refused the subscription's renewals. The code now opens
the row with the intent; this backfills the rows the old code never wrote, due at once, so the
janitor asks YooKassa (or gives up honestly) as for any other payment.

An upgrade payment counts as answered once a `PaymentFailed` or a `PaymentSucceeded` names it.
A success whose receipt was still registering stays out: it is settled, and before this revision
nothing followed its receipt either.

Revision ID: pp0007_upgrades
Revises: pp0006_recon
Create Date: 2026-12-07
"""

from alembic import op

revision = "pp0007_upgrades"
down_revision = "pp0006_recon"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO processor.open_operations (operation_id, kind, stream_id, opened_at, next_check_at)
        SELECT (u.data->>'payment_id')::uuid, 'payment', u.stream_id, u.occurred_at, now()
        FROM eventstore.events u
        WHERE u.type = 'UpgradeStarted'
          AND NOT EXISTS (
              SELECT 1 FROM eventstore.events a
              WHERE a.stream_id = u.stream_id
                AND a.stream_version > u.stream_version
                AND a.type IN ('PaymentSucceeded', 'PaymentFailed')
                AND a.data->>'payment_id' = u.data->>'payment_id'
          )
        ON CONFLICT (operation_id) DO NOTHING
        """
    )


def downgrade() -> None:
    # The rows are the janitor's to-do list, correct under either code: nothing to undo.
    pass
