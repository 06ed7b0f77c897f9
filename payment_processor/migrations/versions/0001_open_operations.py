"""The processor's own table: provider operations the janitor must follow up.

A payment or refund is "open" from its intent (CheckoutStarted, RenewalStarted, RefundRequested)
until YooKassa gives a final answer (succeeded / canceled). The row is written in the SAME
transaction as the events that open or close it, so the janitor never misses an operation that
a crash left behind, and `next_check_at` says when to ask YooKassa again.

Revision ID: pp0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "pp0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS processor")
    op.execute(
        """
        CREATE TABLE processor.open_operations (
            operation_id   UUID        PRIMARY KEY,
            kind           TEXT        NOT NULL CHECK (kind IN ('payment', 'refund')),
            stream_id      TEXT        NOT NULL,
            opened_at      TIMESTAMPTZ NOT NULL,
            checks         INTEGER     NOT NULL DEFAULT 0,
            next_check_at  TIMESTAMPTZ NOT NULL,
            last_checked_at TIMESTAMPTZ
        )
        """
    )
    op.execute("CREATE INDEX open_operations_next_check_idx ON processor.open_operations (next_check_at)")


def downgrade() -> None:
    op.execute("DROP SCHEMA processor CASCADE")
