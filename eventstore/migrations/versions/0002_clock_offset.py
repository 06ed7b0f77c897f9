"""A shared business-time offset for development, tests and the demo (see infra/clock.py).

Revision ID: es0002
Revises: es0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "es0002"
down_revision = "es0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE eventstore.clock_offset (id INTEGER PRIMARY KEY CHECK (id = 1), offset_seconds DOUBLE PRECISION NOT NULL)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE eventstore.clock_offset")
