"""Drop `eventstore.tracking`: no consumer records (consumer, event id) there any more.

Each consumer records what it handled next to its own effect instead: the processor its handled
commands, the projector per-stream versions, the notifier its email log. The table and the helper
module that wrote it were left over from an earlier design.

Revision ID: es0003
Revises: es0002
Create Date: 2026-12-06
"""

from alembic import op

revision = "es0003"
down_revision = "es0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TABLE IF EXISTS eventstore.tracking")


def downgrade() -> None:
    op.execute(
        """
        CREATE TABLE eventstore.tracking (
            consumer    TEXT        NOT NULL,
            event_id    UUID        NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (consumer, event_id)
        )
        """
    )
