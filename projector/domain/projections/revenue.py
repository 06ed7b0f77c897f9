"""`read.revenue` and `read.revenue_subscriptions`: the revenue report's monthly deltas (decision 0124).

`revenue` holds, per account, month (UTC `YYYY-MM`) and plan, additive counts: payments and
revenue, refunds, new / churned / renewed subscriptions, renewals that failed (in the month of
the first failure) and of those the ones that later succeeded, and the change of active paid
subscriptions and MRR in that month. Every row belongs to one account stream (decision 0051), so
the live projector and `billing replay` build the same rows; readers sum them over accounts
(`rules.revenue.SUM_SQL`) and `rules.revenue.report` turns the changes into month-end values.

`revenue_subscriptions` is this projection's memory per subscription: whether it is counted as an
active paid subscription, under which plan and with which monthly value, and the month its
current renewal first failed.
"""

from __future__ import annotations

from datetime import datetime

from projector.domain.events import ProjectedEvent, currency, minor, ts
from projector.domain.projections.base import BIGINT, BOOLEAN, INTEGER, TEXT, TIMESTAMPTZ, UUID, TableSpec
from projector.domain.projections.subscriptions import IMMEDIATE_CANCEL_MODES
from projector.domain.state import FOREIGN, Row, State
from rules.revenue import COUNTS, month_of, monthly_value_minor

TABLE = TableSpec(
    "revenue",
    "row_key",
    (
        ("row_key", TEXT), ("user_id", TEXT), ("month", TEXT), ("plan_id", TEXT), ("currency", TEXT),
        ("payments", INTEGER), ("revenue_minor", BIGINT), ("refunds", INTEGER), ("refunded_minor", BIGINT),
        ("new_subscribers", INTEGER), ("churned", INTEGER), ("renewed", INTEGER), ("renewals_failed", INTEGER),
        ("renewals_recovered", INTEGER), ("active_delta", INTEGER), ("mrr_delta_minor", BIGINT),
        ("updated_at", TIMESTAMPTZ),
    ),
)
T = TABLE.name

SUBSCRIPTIONS = TableSpec(
    "revenue_subscriptions",
    "subscription_id",
    (
        ("subscription_id", UUID), ("user_id", TEXT), ("plan_id", TEXT), ("currency", TEXT), ("counted", BOOLEAN),
        ("monthly_minor", BIGINT), ("failed_month", TEXT), ("updated_at", TIMESTAMPTZ),
    ),
)
S = SUBSCRIPTIONS.name
MORE_TABLES = (SUBSCRIPTIONS,)


def _memory(state: State, ev: ProjectedEvent) -> Row | None:
    """This subscription's memory row (made from its read-model row on first use), or None."""
    if ev.user_id is None:
        return None
    sub_id = ev.data["subscription_id"]
    row = state.claim(S, sub_id, ev.user_id)
    if row is FOREIGN:
        return None
    if row is None:
        sub = state.owned("subscriptions", sub_id, ev.user_id)
        if sub is None:
            return None
        row = {
            "subscription_id": sub_id, "user_id": ev.user_id, "plan_id": sub["plan_id"], "currency": sub["currency"],
            "counted": False, "monthly_minor": 0, "failed_month": None, "updated_at": ev.occurred_at,
        }
    return row


def _remember(state: State, ev: ProjectedEvent, row: Row) -> None:
    row["updated_at"] = ev.occurred_at
    state.put(S, row["subscription_id"], row)


def _add(state: State, ev: ProjectedEvent, month: str, plan_id: str, cur: str, **counts: int) -> None:
    """Add to the account's row of (month, plan)."""
    key = f"{ev.user_id}|{month}|{plan_id}|{cur}"
    row = state.get(T, key)
    if row is None:
        row = {"row_key": key, "user_id": ev.user_id, "month": month, "plan_id": plan_id, "currency": cur, **dict.fromkeys(COUNTS, 0)}
    for name, value in counts.items():
        row[name] += value
    row["updated_at"] = ev.occurred_at
    state.put(T, key, row)


def _end(state: State, ev: ProjectedEvent, mem: Row, at: datetime) -> None:
    """An active paid subscription ends (expired, or canceled with immediate effect): churn."""
    if mem["counted"]:
        _add(state, ev, month_of(at), mem["plan_id"], mem["currency"], churned=1, active_delta=-1, mrr_delta_minor=-mem["monthly_minor"])
        mem["counted"], mem["monthly_minor"] = False, 0
    mem["failed_month"] = None
    _remember(state, ev, mem)


def _activated(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    mem = _memory(state, ev)
    if mem is None or d.get("granted") or minor(d["amount_paid"]) <= 0 or mem["counted"]:
        return  # granted access is neither a paying subscriber nor MRR
    start, end = ts(d["period_start"]), ts(d["period_end"])
    monthly = monthly_value_minor(minor(d["amount_paid"]), (end - start).days)
    mem.update(plan_id=d["plan_id"], currency=currency(d["amount_paid"]), counted=True, monthly_minor=monthly, failed_month=None)
    _add(state, ev, month_of(start), mem["plan_id"], mem["currency"], new_subscribers=1, active_delta=1, mrr_delta_minor=monthly)
    _remember(state, ev, mem)


def _renewed(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    mem = _memory(state, ev)
    if mem is None:
        return
    month = month_of(ev.occurred_at)
    if mem["failed_month"] is not None:
        _add(state, ev, mem["failed_month"], mem["plan_id"], mem["currency"], renewals_recovered=1)
        mem["failed_month"] = None
    monthly = monthly_value_minor(minor(d["amount"]), (ts(d["period_end"]) - ts(d["period_start"])).days)
    if not mem["counted"]:
        if monthly > 0:  # a free trial's first charge: a new paying subscriber from now on
            mem.update(counted=True, monthly_minor=monthly, currency=currency(d["amount"]))
            _add(state, ev, month, mem["plan_id"], mem["currency"], new_subscribers=1, active_delta=1, mrr_delta_minor=monthly)
    else:
        _add(state, ev, month, mem["plan_id"], mem["currency"], renewed=1)
        if monthly != mem["monthly_minor"]:  # the price changed with this period
            _add(state, ev, month, mem["plan_id"], mem["currency"], mrr_delta_minor=monthly - mem["monthly_minor"])
            mem["monthly_minor"] = monthly
    _remember(state, ev, mem)


def _renewal_failed(state: State, ev: ProjectedEvent) -> None:
    mem = _memory(state, ev)
    if mem is None or mem["failed_month"] is not None:
        return  # only a renewal's first failure counts
    mem["failed_month"] = month_of(ev.occurred_at)
    _add(state, ev, mem["failed_month"], mem["plan_id"], mem["currency"], renewals_failed=1)
    _remember(state, ev, mem)


def _expired(state: State, ev: ProjectedEvent) -> None:
    mem = _memory(state, ev)
    if mem is not None:
        _end(state, ev, mem, ts(ev.data["expired_at"]) or ev.occurred_at)


def _canceled(state: State, ev: ProjectedEvent) -> None:
    if ev.data["mode"] not in IMMEDIATE_CANCEL_MODES:
        return  # at period end: still active until it expires
    mem = _memory(state, ev)
    if mem is not None:
        _end(state, ev, mem, ts(ev.data["effective_at"]) or ev.occurred_at)


def _payment_succeeded(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    if d.get("purpose") == "card_check":
        return  # a card check's money goes straight back: neither revenue nor a refund of revenue
    mem = _memory(state, ev)
    if mem is None:
        return
    _add(state, ev, month_of(ts(d["paid_at"]) or ev.occurred_at), mem["plan_id"], currency(d["amount"]), payments=1,
         revenue_minor=minor(d["amount"]))


def _refund_succeeded(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    paid = state.owned("payments", d["payment_id"], ev.user_id)
    if paid is not None and paid["purpose"] == "card_check":
        return
    mem = _memory(state, ev)
    if mem is None:
        return
    _add(state, ev, month_of(ev.occurred_at), mem["plan_id"], currency(d["amount"]), refunds=1, refunded_minor=minor(d["amount"]))


HANDLERS = {
    "SubscriptionActivated": _activated,
    "SubscriptionRenewed": _renewed,
    "RenewalFailed": _renewal_failed,
    "SubscriptionExpired": _expired,
    "SubscriptionCanceled": _canceled,
    "PaymentSucceeded": _payment_succeeded,
    "RefundSucceeded": _refund_succeeded,
}
