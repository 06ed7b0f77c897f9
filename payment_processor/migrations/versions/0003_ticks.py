"""`processor.ticks`: when the janitor and the scheduler last finished a tick (one row each).

Neither leaves a trace when nothing is due, so without this row an operator cannot tell a quiet
janitor from a dead one. `billing status` shows the age of each row; each ticker overwrites its
own row after every successful tick (`payment_processor/entrypoints/ticker.py`).

Revision ID: pp0003
Revises: pp0002
Create Date: 2026-12-06
"""

from alembic import op

revision = "pp0003"
down_revision = "pp0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE processor.ticks (
            name       TEXT        PRIMARY KEY,
            ticked_at  TIMESTAMPTZ NOT NULL,
            ticked_by  TEXT        NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE processor.ticks")
