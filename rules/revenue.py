"""Revenue report arithmetic: pure functions shared by the projector (which records monthly deltas),
the admin's Revenue page and `billing report` (which turn them into the report). Decision 0124.

The projector keeps, per account, month (UTC, `YYYY-MM`) and plan, additive counts: payments and
revenue, refunds, new / churned / renewed subscriptions, renewals that failed and that later
recovered, and the CHANGE of active paid subscriptions and of MRR in that month. Summing them over
accounts gives one row per month and plan (`MonthTotals`); `report()` then turns the changes into
month-end values by a running sum, and adds the ratios.

Definitions:
- MRR at month end = the sum of the normalised monthly values of the paid subscriptions active at
  that instant; a subscription's monthly value = the amount of its current period × 30 / its days
  (a 30-day period counts as one month; 365 days as 12.17), rounded half up to the kopeck. Granted
  (free) subscriptions and free trials are neither active paid subscriptions nor MRR; a trial's first
  charge makes it a new one. Card checks (refunded at once) are neither revenue nor refunds.
- Active from activation until it expires or is canceled with immediate effect (a cancel at
  period end stays active until it expires); new = paid activations; churned = ends of active
  paid subscriptions; renewed = successful renewals.
- Refund share = refunded ÷ revenue of the month (both counted in the month the money moved).
- Recovery rate = renewals that failed at least once and then succeeded ÷ renewals that failed,
  both counted in the month of the first failure (so a month's rate stays between 0 and 1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

MONTH_DAYS = 30
ALL_PLANS = "*"


def month_of(at: datetime) -> str:
    """The report month of an instant: `YYYY-MM` in UTC."""
    return at.astimezone(timezone.utc).strftime("%Y-%m")


def monthly_value_minor(amount_minor: int, period_days: int) -> int:
    """The normalised monthly value of a period's price, in minor units (half up)."""
    days = max(period_days, 1)
    return int((Decimal(amount_minor) * MONTH_DAYS / days).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def months_between(first: str, last: str) -> list[str]:
    months, month = [], first
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def ratio(part: int, whole: int) -> Decimal | None:
    """part ÷ whole to four places (None when nothing to divide by)."""
    if whole <= 0:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


@dataclass
class MonthTotals:
    """The projector's monthly deltas for one plan, summed over accounts."""

    month: str
    plan_id: str
    currency: str = "RUB"
    payments: int = 0
    revenue_minor: int = 0
    refunds: int = 0
    refunded_minor: int = 0
    new_subscribers: int = 0
    churned: int = 0
    renewed: int = 0
    renewals_failed: int = 0
    renewals_recovered: int = 0
    active_delta: int = 0
    mrr_delta_minor: int = 0


COUNTS = tuple(f.name for f in fields(MonthTotals) if f.name not in ("month", "plan_id", "currency"))


@dataclass
class ReportLine:
    month: str
    plan_id: str
    currency: str
    mrr_minor: int
    active_subscribers: int
    new_subscribers: int
    churned: int
    renewed: int
    payments: int
    revenue_minor: int
    refunds: int
    refunded_minor: int
    refund_share: Decimal | None
    renewals_failed: int
    renewals_recovered: int
    recovery_rate: Decimal | None


def report(
    rows: Iterable[MonthTotals],
    *,
    plan_id: str | None = None,
    month_from: str | None = None,
    month_to: str | None = None,
    through: str | None = None,
) -> list[ReportLine]:
    """Month-end report lines per plan (and, without a plan filter, `*` = all plans), oldest first.

    Every month from a plan's first until `through` (default: the last month with data) gets a line,
    so MRR and active subscribers carry over quiet months. Running sums start at the first month
    ever, whatever `month_from` shows.
    """
    by_plan: dict[tuple[str, str], dict[str, MonthTotals]] = {}
    for row in rows:
        if plan_id is not None and row.plan_id != plan_id:
            continue
        bucket = by_plan.setdefault((row.plan_id, row.currency), {})
        have = bucket.get(row.month)
        if have is None:
            bucket[row.month] = MonthTotals(row.month, row.plan_id, row.currency, *(getattr(row, c) for c in COUNTS))
        else:
            for c in COUNTS:
                setattr(have, c, getattr(have, c) + getattr(row, c))
    if not by_plan:
        return []
    last = through or max(m for months in by_plan.values() for m in months)
    lines: list[ReportLine] = []
    for (plan, cur), months in sorted(by_plan.items()):
        active = mrr = 0
        for month in months_between(min(months), last):
            t = months.get(month) or MonthTotals(month, plan, cur)
            active += t.active_delta
            mrr += t.mrr_delta_minor
            lines.append(_line(t, active, mrr))
    if plan_id is None:
        lines += _all_plans(lines)
    return sorted(
        (ln for ln in lines if (month_from is None or ln.month >= month_from) and (month_to is None or ln.month <= month_to)),
        key=lambda ln: (ln.month, ln.plan_id == ALL_PLANS, ln.plan_id, ln.currency),
    )


def _line(t: MonthTotals, active: int, mrr: int) -> ReportLine:
    return ReportLine(
        month=t.month, plan_id=t.plan_id, currency=t.currency, mrr_minor=mrr, active_subscribers=active,
        new_subscribers=t.new_subscribers, churned=t.churned, renewed=t.renewed, payments=t.payments,
        revenue_minor=t.revenue_minor, refunds=t.refunds, refunded_minor=t.refunded_minor,
        refund_share=ratio(t.refunded_minor, t.revenue_minor), renewals_failed=t.renewals_failed,
        renewals_recovered=t.renewals_recovered, recovery_rate=ratio(t.renewals_recovered, t.renewals_failed),
    )


def _all_plans(lines: list[ReportLine]) -> list[ReportLine]:
    """Totals over plans per month and currency (amounts in different currencies are never added)."""
    totals: dict[tuple[str, str], ReportLine] = {}
    summed = ("mrr_minor", "active_subscribers", "new_subscribers", "churned", "renewed", "payments", "revenue_minor",
              "refunds", "refunded_minor", "renewals_failed", "renewals_recovered")
    for ln in lines:
        key = (ln.month, ln.currency)
        total = totals.get(key)
        if total is None:
            totals[key] = ReportLine(ln.month, ALL_PLANS, ln.currency, *(getattr(ln, n) for n in summed[:9]), None,
                                     ln.renewals_failed, ln.renewals_recovered, None)
        else:
            for name in summed:
                setattr(total, name, getattr(total, name) + getattr(ln, name))
    for total in totals.values():
        total.refund_share = ratio(total.refunded_minor, total.revenue_minor)
        total.recovery_rate = ratio(total.renewals_recovered, total.renewals_failed)
    return list(totals.values())


CSV_COLUMNS = (
    "month", "plan_id", "currency", "mrr", "active_subscribers", "new_subscribers", "churned", "renewed", "payments",
    "revenue", "refunds", "refunded", "refund_share", "renewals_failed", "renewals_recovered", "recovery_rate",
)


def _amount(minor: int) -> str:
    return f"{Decimal(minor) / 100:.2f}"


def csv_text(lines: Iterable[ReportLine]) -> str:
    """The report as CSV (amounts as decimal strings, ratios as 0..1 with four places, empty when undefined)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for ln in lines:
        writer.writerow([
            ln.month, ln.plan_id, ln.currency, _amount(ln.mrr_minor), ln.active_subscribers, ln.new_subscribers, ln.churned,
            ln.renewed, ln.payments, _amount(ln.revenue_minor), ln.refunds, _amount(ln.refunded_minor),
            "" if ln.refund_share is None else str(ln.refund_share), ln.renewals_failed, ln.renewals_recovered,
            "" if ln.recovery_rate is None else str(ln.recovery_rate),
        ])
    return out.getvalue()


SUM_SQL = """
    SELECT month, plan_id, currency, {sums}
    FROM {{schema}}.revenue
    GROUP BY month, plan_id, currency
""".format(sums=", ".join(f"SUM({c})::bigint AS {c}" for c in COUNTS))
"""The one query over the projector's `revenue` table both readers run (format `schema`): monthly
deltas per plan summed over accounts; `report()` does the rest."""
