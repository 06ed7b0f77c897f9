"""The projector's own bookkeeping: per-stream versions applied to the read models, replay runs.

`projector.stream_positions` is written in the same transaction as the read-model rows it
describes: an event at or below a stream's version is a duplicate (no-op), one above version+1
reveals a gap that is filled from the event store first. `projector.replay_runs` numbers the
rebuild schemas (`read_rebuild_<id>`) and keeps an audit trail of rebuilds, checks and swaps.

Revision ID: rm0002
Revises: rm0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "rm0002"
down_revision = "rm0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS projector")
    op.execute(
        """
        CREATE TABLE projector.stream_positions (
            stream_id   TEXT PRIMARY KEY,
            version     INTEGER NOT NULL,
            position    BIGINT,
            updated_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE projector.replay_runs (
            run_id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            mode          TEXT NOT NULL,
            tables        TEXT[] NOT NULL,
            target_schema TEXT NOT NULL,
            head_position BIGINT,
            events        BIGINT,
            differences   INTEGER,
            status        TEXT NOT NULL DEFAULT 'running',
            started_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
            finished_at   TIMESTAMPTZ
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA projector CASCADE")
