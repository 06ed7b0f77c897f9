"""Price-change notices: which plan a subscription renews on, the plans' scheduled prices, and
which notices the scheduler already published (docs/decisions/0120).

* `processor.schedule.plan_id` — written with the rest of the row (`schedule.row_of`); rows older
  than this column get it from `python -m payment_processor.scheduler rebuild`.
* `processor.price_changes` — one row per PlanPriceChangeScheduled, written by the processor in
  the same statement as the plan append (a side write), so the scheduler never folds plan streams.
* `processor.price_notices` — the scheduler's marks: (subscription, change) pairs whose
  AnnouncePriceChange it published, so a notice is not published every tick (a repeat would be
  harmless: the command id is derived from the pair).

Revision ID: pp0005_prices
Revises: pp0004_cards
Create Date: 2026-12-06
"""

from alembic import op

revision = "pp0005_prices"
down_revision = "pp0004_cards"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE processor.schedule ADD COLUMN plan_id TEXT")
    op.execute("CREATE INDEX schedule_live_plan_idx ON processor.schedule (plan_id) WHERE status IN ('active', 'past_due')")
    op.execute(
        """
        CREATE TABLE processor.price_changes (
            change_id     UUID        PRIMARY KEY,
            plan_id       TEXT        NOT NULL,
            price_minor   BIGINT      NOT NULL,
            currency      TEXT        NOT NULL,
            effective_at  TIMESTAMPTZ NOT NULL,
            grandfather   BOOLEAN     NOT NULL,
            recorded_at   TIMESTAMPTZ NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE processor.price_notices (
            subscription_id UUID        NOT NULL,
            change_id       UUID        NOT NULL,
            sent_at         TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (subscription_id, change_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE processor.price_notices")
    op.execute("DROP TABLE processor.price_changes")
    op.execute("DROP INDEX processor.schedule_live_plan_idx")
    op.execute("ALTER TABLE processor.schedule DROP COLUMN plan_id")
