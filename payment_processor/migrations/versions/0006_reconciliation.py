"""`processor.reconciliation_runs` and `processor.reconciliation_differences` (docs/decisions/0122).

One row per reconciliation run (daily by the processor's reconciler, or `billing reconcile` by an
operator) and one per difference it found, with its status: `open` (an operator must look),
`recorded` (its fact went to the processor as a command, `command_id`), `resolved` (an operator
closed it with a reason, in the admin). A scheduled window is reconciled once: two processor
instances cannot both claim it (the partial unique index); a failed one is tried again.

Revision ID: pp0006_recon
Revises: pp0005_prices
Create Date: 2026-12-06
"""

from alembic import op

revision = "pp0006_recon"
down_revision = "pp0005_prices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE processor.reconciliation_runs (
            run_id         UUID        PRIMARY KEY,
            trigger        TEXT        NOT NULL CHECK (trigger IN ('schedule', 'operator')),
            window_start   TIMESTAMPTZ NOT NULL,
            window_end     TIMESTAMPTZ NOT NULL,
            started_at     TIMESTAMPTZ NOT NULL,
            finished_at    TIMESTAMPTZ,
            status         TEXT        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
            payments_seen  INTEGER     NOT NULL DEFAULT 0,
            refunds_seen   INTEGER     NOT NULL DEFAULT 0,
            differences    INTEGER     NOT NULL DEFAULT 0,
            recorded       INTEGER     NOT NULL DEFAULT 0,
            error          TEXT
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX reconciliation_runs_scheduled_window ON processor.reconciliation_runs (window_start, window_end)"
        " WHERE trigger = 'schedule' AND status <> 'failed'"
    )
    op.execute("CREATE INDEX reconciliation_runs_started ON processor.reconciliation_runs (started_at DESC)")
    op.execute(
        """
        CREATE TABLE processor.reconciliation_differences (
            difference_id          UUID        PRIMARY KEY,
            run_id                 UUID        NOT NULL REFERENCES processor.reconciliation_runs (run_id),
            kind                   TEXT        NOT NULL
                CHECK (kind IN ('unknown_to_us', 'unknown_to_provider', 'status_differs', 'amount_differs')),
            object_type            TEXT        NOT NULL CHECK (object_type IN ('payment', 'refund')),
            provider_id            TEXT        NOT NULL,
            our_id                 UUID,
            user_id                TEXT,
            our_status             TEXT,
            provider_status        TEXT,
            our_amount_minor       BIGINT,
            provider_amount_minor  BIGINT,
            currency               TEXT,
            detail                 TEXT        NOT NULL,
            status                 TEXT        NOT NULL CHECK (status IN ('open', 'recorded', 'resolved')),
            command_id             UUID,
            fact                   JSONB,
            created_at             TIMESTAMPTZ NOT NULL,
            resolved_by            TEXT,
            resolution             TEXT,
            resolved_at            TIMESTAMPTZ
        )
        """
    )
    op.execute("CREATE INDEX reconciliation_differences_run ON processor.reconciliation_differences (run_id)")
    op.execute(
        "CREATE INDEX reconciliation_differences_status ON processor.reconciliation_differences (status, kind, created_at DESC)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE processor.reconciliation_differences")
    op.execute("DROP TABLE processor.reconciliation_runs")
