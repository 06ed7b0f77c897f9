"""`read.subscriptions`: each subscription's status, period, money and renewal state.

Statuses (contracts): `pending_payment` → `active` → `canceled` | `expired`; `past_due` while
renewals are being retried (back to `active` when a retry or the customer's pay-now succeeds);
`status_reason` is `renewal_awaits_3ds` while a renewal waits for the customer's 3-D Secure;
`payment_failed` when the first payment was declined or abandoned.
Cancel at period end keeps `active` with `cancel_at_period_end` and `auto_renew` off until the
SubscriptionExpired at the period end. `amount_paid_minor` sums PaymentSucceeded (purchase and
renewals), `amount_refunded_minor` sums RefundSucceeded. `upcoming_price_minor` from
`upcoming_price_at` is a plan price change announced to the subscriber (PriceChangeAnnounced); the
renewal starting at/after that date makes it the `price_minor`. A plan switch (docs/decisions/0119)
changes `plan_id`/`plan_name`/`price_minor`: an upgrade at once (`period_paid_minor` = its charge plus
the credit carried), a downgrade with the renewal at the period end (`pending_plan_*` until then).
"""

from __future__ import annotations

from projector.domain.events import ProjectedEvent, currency, minor, ts
from projector.domain.projections.base import BIGINT, BOOLEAN, INTEGER, TEXT, TIMESTAMPTZ, UUID, TableSpec
from projector.domain.state import FOREIGN, Row, State
from schemas import DEFAULT_PRODUCT

TABLE = TableSpec(
    "subscriptions",
    "subscription_id",
    (
        ("subscription_id", UUID), ("user_id", TEXT), ("email", TEXT), ("locale", TEXT),
        ("plan_id", TEXT), ("plan_name", TEXT), ("status", TEXT), ("auto_renew", BOOLEAN),
        ("cancel_at_period_end", BOOLEAN), ("period_start", TIMESTAMPTZ), ("period_end", TIMESTAMPTZ),
        ("price_minor", BIGINT), ("amount_paid_minor", BIGINT), ("amount_refunded_minor", BIGINT),
        ("currency", TEXT), ("payment_method_title", TEXT), ("last_payment_id", UUID),
        ("renewal_attempt", INTEGER), ("next_retry_at", TIMESTAMPTZ), ("status_reason", TEXT),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ), ("canceled_at", TIMESTAMPTZ),
        ("expired_at", TIMESTAMPTZ), ("trial", BOOLEAN), ("upcoming_price_minor", BIGINT), ("upcoming_price_at", TIMESTAMPTZ),
        ("promo_code", TEXT), ("discount_minor", BIGINT), ("promo_periods_left", INTEGER),
        ("product", TEXT), ("period_paid_minor", BIGINT),
        ("pending_plan_id", TEXT), ("pending_plan_name", TEXT), ("pending_price_minor", BIGINT),
        ("pending_effective_at", TIMESTAMPTZ),
    ),
)
T = TABLE.name

ACCESS_STATUSES = frozenset({"active", "past_due"})
"""Statuses in which the user has access (counted as active on the account)."""

IMMEDIATE_CANCEL_MODES = frozenset({"refund_now", "admin", "duplicate_payment"})


def _new(ev: ProjectedEvent, subscription_id: str, d: dict, *, price: dict | None) -> Row:
    customer = d.get("customer") or {}
    return {
        "subscription_id": subscription_id,
        "user_id": ev.user_id,
        "email": customer.get("email"),
        "locale": customer.get("locale"),
        "plan_id": d["plan_id"],
        "plan_name": d["plan_name"],
        "status": "pending_payment",
        "auto_renew": bool(d.get("auto_renew", True)),
        "cancel_at_period_end": False,
        "period_start": None,
        "period_end": None,
        "price_minor": minor(price),
        "amount_paid_minor": 0,
        "amount_refunded_minor": 0,
        "currency": currency(price),
        "payment_method_title": None,
        "last_payment_id": d.get("payment_id"),
        "renewal_attempt": 0,
        "next_retry_at": None,
        "status_reason": None,
        "created_at": ev.occurred_at,
        "updated_at": ev.occurred_at,
        "canceled_at": None,
        "expired_at": None,
        "product": d.get("product") or DEFAULT_PRODUCT,
        "period_paid_minor": None,
        "pending_plan_id": None,
        "pending_plan_name": None,
        "pending_price_minor": None,
        "pending_effective_at": None,
        "trial": False,
        "upcoming_price_minor": None,
        "upcoming_price_at": None,
        "promo_code": None,
        "discount_minor": 0,
        "promo_periods_left": 0,
    }


def _no_pending_switch(row: Row) -> None:
    row.update(pending_plan_id=None, pending_plan_name=None, pending_price_minor=None, pending_effective_at=None)


def _promo(row: Row, promo: dict | None) -> None:
    """The discount of the latest charge and the discounted periods still to come after it."""
    row["discount_minor"] = minor(promo["discount"]) if promo else 0
    row["promo_periods_left"] = promo["periods_left"] if promo else 0
    if promo:
        row["promo_code"] = promo["code"]


def _customer(row: Row, d: dict) -> None:
    customer = d.get("customer")
    if customer:
        row["email"] = customer.get("email", row["email"])
        row["locale"] = customer.get("locale", row["locale"])


def _existing(state: State, ev: ProjectedEvent) -> Row | None:
    """The subscription an event is about, or None when it never started on this stream."""
    if ev.user_id is None:
        return None
    return state.owned(T, ev.data["subscription_id"], ev.user_id)


def _save(state: State, ev: ProjectedEvent, row: Row) -> None:
    row["updated_at"] = ev.occurred_at
    state.put(T, row["subscription_id"], row)


def _checkout_started(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    if ev.user_id is None:
        return
    row = state.claim(T, d["subscription_id"], ev.user_id)
    if row is FOREIGN:
        return
    promo = d.get("promo")
    price = promo["list_price"] if promo else d["amount"]  # the list price; the discount is beside it
    if row is None:
        row = _new(ev, d["subscription_id"], d, price=price)
    else:
        # the same subscription checked out again (a retried purchase): a new payment attempt
        if row["status"] in ("pending_payment", "payment_failed"):
            row["status"] = "pending_payment"
            row["status_reason"] = None
        row["price_minor"] = minor(price)
        row["currency"] = currency(price)
        row["last_payment_id"] = d["payment_id"]
        _customer(row, d)
    _promo(row, promo)
    _save(state, ev, row)


def _card_check_started(state: State, ev: ProjectedEvent) -> None:
    """A trial's check starts its (pending) subscription at the plan's price; other checks change nothing here."""
    d = ev.data
    terms = d.get("trial")
    if ev.user_id is None or not terms:
        return
    row = state.claim(T, d["subscription_id"], ev.user_id)
    if row is FOREIGN or row is not None:
        return
    row = _new(ev, d["subscription_id"], {**terms, "customer": d.get("customer"), "payment_id": None}, price=terms["price"])
    _save(state, ev, row)


def _is_check(d: dict) -> bool:
    return d.get("purpose") == "card_check"


def _renewal_started(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    row["last_payment_id"] = ev.data["payment_id"]
    _customer(row, ev.data)
    _save(state, ev, row)


AWAITS_3DS = "renewal_awaits_3ds"
"""`status_reason` while a renewal charge waits for the customer's 3-D Secure confirmation."""


def _confirmation_required(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    row["status_reason"] = AWAITS_3DS
    row["last_payment_id"] = ev.data["payment_id"]
    _save(state, ev, row)


def _payment_created(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None or _is_check(ev.data):
        return
    row["last_payment_id"] = ev.data["payment_id"]
    _save(state, ev, row)


def _payment_succeeded(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    if not _is_check(d):
        row["amount_paid_minor"] += minor(d["amount"])
        row["last_payment_id"] = d["payment_id"]
    method = d.get("payment_method")
    if method and method.get("title"):
        row["payment_method_title"] = method["title"]
    _customer(row, d)
    _save(state, ev, row)


def _payment_failed(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    trial_check = _is_check(d) and row["trial"] is False and row["period_start"] is None
    if (d.get("purpose", "purchase") == "purchase" or trial_check) and row["status"] == "pending_payment":
        row["status"] = "payment_failed"
        row["status_reason"] = d["reason"]
    elif row["status_reason"] == AWAITS_3DS and d["payment_id"] == row["last_payment_id"]:
        row["status_reason"] = d["reason"]  # the 3-D Secure page expired or was declined
    _customer(row, d)
    _save(state, ev, row)


def _activated(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    if ev.user_id is None:
        return
    row = state.claim(T, d["subscription_id"], ev.user_id)
    if row is FOREIGN:
        return
    if row is None:  # a grant: no checkout came first
        row = _new(ev, d["subscription_id"], d, price=d["amount_paid"])
    row.update(
        plan_id=d["plan_id"],
        plan_name=d["plan_name"],
        status="active",
        period_start=ts(d["period_start"]),
        period_end=ts(d["period_end"]),
        auto_renew=bool(d["auto_renew"]),
        cancel_at_period_end=False,
        renewal_attempt=0,
        next_retry_at=None,
        status_reason=d.get("reason"),
        trial=bool(d.get("trial")),
    )
    if d.get("payment_id"):
        row["last_payment_id"] = d["payment_id"]
    if d.get("payment_method_title"):
        row["payment_method_title"] = d["payment_method_title"]
    _customer(row, d)
    _save(state, ev, row)


def _refund_succeeded(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    payment = state.owned("payments", ev.data["payment_id"], ev.user_id)  # type: ignore[arg-type]
    if payment is not None and payment["purpose"] == "card_check":
        return  # a check's money going back: it was never counted as paid
    row["amount_refunded_minor"] += minor(ev.data["amount"])
    _save(state, ev, row)


def _canceled(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row["auto_renew"] = False
    row["canceled_at"] = ev.occurred_at
    if d["mode"] == "at_period_end":
        row["cancel_at_period_end"] = True
    else:
        row["status"] = "canceled"
        row["next_retry_at"] = None
        row["status_reason"] = d.get("reason") or d["mode"]
        _no_pending_switch(row)
    _customer(row, d)
    _save(state, ev, row)


def _auto_renew_changed(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    enabled = bool(ev.data["enabled"])
    row["auto_renew"] = enabled
    if enabled:
        row["cancel_at_period_end"] = False  # renewing again withdraws a cancel at period end
    _save(state, ev, row)


def _renewed(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row.update(
        status="active",
        period_start=ts(d["period_start"]),
        period_end=ts(d["period_end"]),
        last_payment_id=d["payment_id"],
        trial=False,
        renewal_attempt=0,
        next_retry_at=None,
        status_reason=None,
        period_paid_minor=None,
    )
    upcoming_at = row.get("upcoming_price_at")
    if upcoming_at is not None and row["period_start"] >= upcoming_at:
        row.update(price_minor=row["upcoming_price_minor"], upcoming_price_minor=None, upcoming_price_at=None)
    _promo(row, d.get("promo"))
    if d.get("plan_id"):  # a scheduled downgrade took effect
        list_price = row["pending_price_minor"] if row.get("pending_plan_id") == d["plan_id"] else minor(d["amount"])
        row.update(plan_id=d["plan_id"], plan_name=d.get("plan_name") or d["plan_id"], price_minor=list_price)
    _no_pending_switch(row)
    _customer(row, d)
    _save(state, ev, row)


def _renewal_failed(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row["status"] = "past_due"
    row["renewal_attempt"] = d["attempt"]
    row["next_retry_at"] = None if d.get("final") else ts(d.get("next_retry_at"))
    row["status_reason"] = d["reason"]
    if d.get("payment_id"):
        row["last_payment_id"] = d["payment_id"]
    _save(state, ev, row)


def _expired(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row["status"] = "expired"
    _no_pending_switch(row)
    row["expired_at"] = ts(d["expired_at"])
    row["next_retry_at"] = None
    row["auto_renew"] = False
    row["status_reason"] = d["reason"]
    _save(state, ev, row)


def _payment_method_replaced(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    row["payment_method_title"] = ev.data["payment_method"].get("title") or row["payment_method_title"]
    _save(state, ev, row)


def _price_announced(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row.update(upcoming_price_minor=minor(d["new_price"]), upcoming_price_at=ts(d["first_renewal_at"]))
    _save(state, ev, row)


def _adjusted(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    row["period_end"] = ts(ev.data["period_end"])
    _customer(row, ev.data)
    _save(state, ev, row)


def _plan_switched(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row.update(
        plan_id=d["plan_id"],
        plan_name=d["plan_name"],
        price_minor=minor(d["price"]),
        status="active",
        period_start=ts(d["period_start"]),
        period_end=ts(d["period_end"]),
        period_paid_minor=minor(d["amount_charged"]) + minor(d["credit"]),
        trial=False,
        renewal_attempt=0,
        next_retry_at=None,
        status_reason=None,
    )
    if d.get("payment_id"):
        row["last_payment_id"] = d["payment_id"]
    _no_pending_switch(row)
    _customer(row, d)
    _save(state, ev, row)


def _switch_scheduled(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    d = ev.data
    row.update(
        pending_plan_id=d["plan_id"],
        pending_plan_name=d["plan_name"],
        pending_price_minor=minor(d["price"]),
        pending_effective_at=ts(d["effective_at"]),
    )
    _save(state, ev, row)


def _switch_withdrawn(state: State, ev: ProjectedEvent) -> None:
    row = _existing(state, ev)
    if row is None:
        return
    _no_pending_switch(row)
    _save(state, ev, row)


HANDLERS = {
    "PlanSwitched": _plan_switched,
    "PlanSwitchScheduled": _switch_scheduled,
    "PlanSwitchWithdrawn": _switch_withdrawn,
    "CheckoutStarted": _checkout_started,
    "RenewalStarted": _renewal_started,
    "RecoveryStarted": _renewal_started,
    "RenewalConfirmationRequired": _confirmation_required,
    "CardCheckStarted": _card_check_started,
    "PaymentMethodReplaced": _payment_method_replaced,
    "PaymentCreated": _payment_created,
    "PaymentSucceeded": _payment_succeeded,
    "PaymentFailed": _payment_failed,
    "SubscriptionActivated": _activated,
    "RefundSucceeded": _refund_succeeded,
    "SubscriptionCanceled": _canceled,
    "AutoRenewChanged": _auto_renew_changed,
    "SubscriptionRenewed": _renewed,
    "RenewalFailed": _renewal_failed,
    "SubscriptionExpired": _expired,
    "SubscriptionAdjusted": _adjusted,
    "PriceChangeAnnounced": _price_announced,
}

COUNT_EVENTS = frozenset(
    {"CheckoutStarted", "CardCheckStarted", "SubscriptionActivated", "PaymentFailed", "SubscriptionCanceled", "SubscriptionRenewed",
     "RenewalFailed", "SubscriptionExpired", "PlanSwitched"}
)
"""The events that may create a subscription or change its status (the account counts follow them)."""
