"""Revenue reports: the arithmetic (rules.revenue) and the projector rows it is computed from.

Histories are built with tests/support/projector_scenarios.py and fed through the projector's own
`apply_event`, as the live projector and `billing replay` do; the report is then computed the way
the admin and `billing report` compute it (rows summed per month and plan, then `report()`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from projector.domain.events import ProjectedEvent
from projector.domain.projections import TABLES, apply_event, new_state
from projector.domain.state import State
from rules.revenue import COUNTS, MonthTotals, csv_text, month_of, monthly_value_minor, report
from schemas import Money
from tests.support.projector_scenarios import AccountScenario, Clock, History, PlanInfo, plan_events

DAY = 86400.0
MONTHLY = PlanInfo("monthly", "Monthly", Money.from_minor(29900), 30)
YEARLY = PlanInfo("yearly", "Yearly", Money.from_minor(299000), 365)


# ---------------------------------------------------------------------- the arithmetic


def test_monthly_value_months_and_ratios() -> None:
    assert monthly_value_minor(29900, 30) == 29900
    assert monthly_value_minor(299000, 365) == 24575  # 2990.00 × 30 / 365 = 245.753… → 245.75
    assert monthly_value_minor(9900, 7) == 42429  # a weekly plan is worth more than four weeks a month
    assert monthly_value_minor(1, 0) == 30  # never divides by zero
    assert month_of(datetime(2026, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-3)))) == "2026-02"  # UTC


def test_report_turns_changes_into_month_end_values_and_fills_quiet_months() -> None:
    rows = [
        MonthTotals("2026-01", "monthly", new_subscribers=2, active_delta=2, mrr_delta_minor=59800, payments=2, revenue_minor=59800),
        MonthTotals("2026-01", "monthly", refunds=1, refunded_minor=14950, churned=1, active_delta=-1, mrr_delta_minor=-29900),
        MonthTotals("2026-03", "monthly", renewed=1, payments=1, revenue_minor=29900, renewals_failed=2, renewals_recovered=1),
        MonthTotals("2026-02", "yearly", new_subscribers=1, active_delta=1, mrr_delta_minor=24575, payments=1, revenue_minor=299000),
    ]
    lines = report(rows)
    by = {(ln.month, ln.plan_id): ln for ln in lines}
    jan, feb, mar = by["2026-01", "monthly"], by["2026-02", "monthly"], by["2026-03", "monthly"]
    assert (jan.active_subscribers, jan.mrr_minor, jan.new_subscribers, jan.churned) == (1, 29900, 2, 1)
    assert jan.refund_share == Decimal("0.2500") and jan.recovery_rate is None
    assert (feb.active_subscribers, feb.mrr_minor, feb.payments) == (1, 29900, 0)  # a quiet month carries MRR over
    assert mar.recovery_rate == Decimal("0.5000") and mar.refund_share == Decimal("0.0000")
    assert ("2026-01", "yearly") not in by and by["2026-03", "yearly"].mrr_minor == 24575
    total = by["2026-03", "*"]
    assert (total.mrr_minor, total.active_subscribers, total.revenue_minor) == (29900 + 24575, 2, 29900)
    assert [ln.plan_id for ln in lines if ln.month == "2026-02"] == ["monthly", "yearly", "*"]
    # Filters: a plan, a month range; running sums still start at the first month.
    only = report(rows, plan_id="monthly", month_from="2026-02", month_to="2026-02")
    assert [(ln.month, ln.plan_id, ln.mrr_minor) for ln in only] == [("2026-02", "monthly", 29900)]
    assert [ln.month for ln in report(rows, plan_id="yearly", through="2026-04")] == ["2026-02", "2026-03", "2026-04"]
    assert report([]) == []
    text = csv_text(only).splitlines()
    assert text[0].startswith("month,plan_id,currency,mrr,active_subscribers")
    assert text[1] == "2026-02,monthly,RUB,299.00,1,0,0,0,0,0.00,0,0.00,,0,0,"


# ---------------------------------------------------------------------- projector rows


def project(history: History) -> State:
    state = new_state()
    versions: dict[str, int] = {}
    for envelope in history.events():
        versions[envelope.stream_id] = versions.get(envelope.stream_id, 0) + 1
        apply_event(state, ProjectedEvent.from_envelope_dict(orjson.loads(envelope.to_json()), version=versions[envelope.stream_id]))
    return state


def totals(state: State) -> list[MonthTotals]:
    """What `rules.revenue.SUM_SQL` returns, summed in Python."""
    summed: dict[tuple[str, str, str], MonthTotals] = {}
    for row in state.rows["revenue"].values():
        assert set(row) == set(TABLES["revenue"].column_names), "a projection must fill every column"
        t = summed.setdefault((row["month"], row["plan_id"], row["currency"]), MonthTotals(row["month"], row["plan_id"], row["currency"]))
        for c in COUNTS:
            setattr(t, c, getattr(t, c) + row[c])
    return list(summed.values())


def months(clock: Clock, n: float) -> None:
    clock.tick(n * 30 * DAY)


def test_projected_rows_give_mrr_churn_refunds_and_recovery_by_month_and_plan() -> None:
    history, clock = History(), Clock(datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))
    plan_events(history, clock, MONTHLY)
    plan_events(history, clock, YEARLY)
    anna, boris, vera, gleb = (AccountScenario(history, clock, f"u-{n}") for n in ("anna", "boris", "vera", "gleb"))

    a = anna.purchase(MONTHLY)  # January: Anna, Boris and Vera buy; Gleb is granted free access
    b = boris.purchase(MONTHLY)
    v = vera.purchase(YEARLY)
    gleb.grant(MONTHLY)
    boris.purchase(MONTHLY, "decline")
    clock.tick(DAY)
    boris.cancel(b, "refund_now")  # Boris cancels in January: churn and a refund of 29/30

    months(clock, 1)  # early February: Anna's renewal fails once, then succeeds (recovered)
    anna.renew(a, success=False)
    clock.tick(DAY)
    anna.renew(a, success=True)

    months(clock, 1)  # early March: Anna's renewal fails for good and she expires; Vera stays
    anna.renew(a, success=False)
    anna.renew(a, success=False, final=True)
    anna.expire(a)

    state = project(history)
    by = {(ln.month, ln.plan_id): ln for ln in report(totals(state))}
    jan, feb, mar = by["2026-01", "monthly"], by["2026-02", "monthly"], by["2026-03", "monthly"]
    assert (jan.new_subscribers, jan.churned, jan.active_subscribers, jan.mrr_minor) == (2, 1, 1, 29900)  # Gleb is not paying
    assert (jan.payments, jan.revenue_minor, jan.refunds, jan.refunded_minor) == (2, 59800, 1, 28903)
    assert jan.refund_share == Decimal("0.4833")
    assert (feb.renewed, feb.renewals_failed, feb.renewals_recovered, feb.recovery_rate) == (1, 1, 1, Decimal("1.0000"))
    assert (feb.active_subscribers, feb.mrr_minor, feb.revenue_minor) == (1, 29900, 29900)
    assert (mar.renewals_failed, mar.renewals_recovered, mar.recovery_rate, mar.churned) == (1, 0, Decimal("0.0000"), 1)
    assert (mar.active_subscribers, mar.mrr_minor) == (0, 0)
    yearly = by["2026-03", "yearly"]
    assert (yearly.active_subscribers, yearly.mrr_minor, by["2026-01", "yearly"].revenue_minor) == (1, 24575, 299000)
    assert by["2026-03", "*"].mrr_minor == 24575 and by["2026-01", "*"].active_subscribers == 2
    assert v.status == "active"

    # Every row belongs to one account: projecting accounts separately gives the same rows (replayable in any order).
    again = project(history)
    assert again.rows["revenue"] == state.rows["revenue"]
    assert {row["user_id"] for row in state.rows["revenue"].values()} == {"u-anna", "u-boris", "u-vera"}
