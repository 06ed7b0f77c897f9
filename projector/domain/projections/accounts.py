"""`read.accounts`: one summary row per billing account (`account-<user_id>` stream).

Counts are recomputed from the account's subscription rows after the subscriptions projection
ran (it runs first), so they can never drift from `read.subscriptions`: `subscriptions_count` is
every subscription, `active_subscriptions` those with access (active or past_due). Totals sum
PaymentSucceeded and RefundSucceeded. `last_event_at` is the time of the account's latest event.
"""

from __future__ import annotations

from projector.domain.events import EVENT_VERSIONS, ProjectedEvent, currency, minor
from projector.domain.projections.base import BIGINT, INTEGER, TEXT, TIMESTAMPTZ, TableSpec
from projector.domain.projections.subscriptions import ACCESS_STATUSES, COUNT_EVENTS
from projector.domain.state import State

TABLE = TableSpec(
    "accounts",
    "user_id",
    (
        ("user_id", TEXT), ("email", TEXT), ("locale", TEXT), ("subscriptions_count", INTEGER),
        ("active_subscriptions", INTEGER), ("total_paid_minor", BIGINT), ("total_refunded_minor", BIGINT),
        ("currency", TEXT), ("last_event_at", TIMESTAMPTZ), ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
    ),
)
T = TABLE.name


def _refunds_a_check(state: State, ev: ProjectedEvent) -> bool:
    payment = state.owned("payments", ev.data.get("payment_id"), ev.user_id)
    return payment is not None and payment["purpose"] == "card_check"


def apply(state: State, ev: ProjectedEvent) -> None:
    user_id = ev.user_id
    if user_id is None:
        return
    row = state.get(T, user_id)
    if row is None:
        row = {
            "user_id": user_id,
            "email": None,
            "locale": None,
            "subscriptions_count": 0,
            "active_subscriptions": 0,
            "total_paid_minor": 0,
            "total_refunded_minor": 0,
            "currency": "RUB",
            "last_event_at": ev.occurred_at,
            "created_at": ev.occurred_at,
            "updated_at": ev.occurred_at,
        }
    d = ev.data
    customer = d.get("customer")
    if customer:
        row["email"] = customer.get("email", row["email"])
        row["locale"] = customer.get("locale", row["locale"])
    kind = ev.type
    # A card check's money comes back at once and is neither paid nor refunded (docs/decisions/0118).
    if kind == "PaymentSucceeded" and d.get("purpose") != "card_check":
        row["total_paid_minor"] += minor(d["amount"])
        row["currency"] = currency(d["amount"])
    elif kind == "RefundSucceeded" and not _refunds_a_check(state, ev):
        row["total_refunded_minor"] += minor(d["amount"])
    if kind in COUNT_EVENTS:
        subs = state.user_subscriptions(user_id)
        row["subscriptions_count"] = len(subs)
        row["active_subscriptions"] = sum(1 for s in subs if s["status"] in ACCESS_STATUSES)
    row["last_event_at"] = ev.occurred_at
    row["updated_at"] = ev.occurred_at
    state.put(T, user_id, row)


HANDLERS = {name: apply for name in EVENT_VERSIONS}
"""Every event of an account stream touches its summary (at least `last_event_at`)."""
