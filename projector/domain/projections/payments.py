"""`read.payments`: every charge attempt (purchase, renewal, recovery = a past-due one paid now,
card check, or upgrade) and how it ended.

Statuses (contracts): `created` (intent recorded, YooKassa not yet answered), `pending` (YooKassa
created it; the user may still be on the payment page), `succeeded`, `canceled` (declined or
abandoned; `reason` is YooKassa's cancellation reason), `unknown` (the answer was lost; the
janitor asks again). A terminal status is never replaced by an intent or "unknown" that arrives
after it.
"""

from __future__ import annotations

import orjson

from projector.domain.events import ProjectedEvent, currency, minor, ts
from projector.domain.projections.base import BIGINT, JSONB, TEXT, TIMESTAMPTZ, UUID, TableSpec
from projector.domain.state import FOREIGN, Row, State

TABLE = TableSpec(
    "payments",
    "payment_id",
    (
        ("payment_id", UUID), ("subscription_id", UUID), ("user_id", TEXT), ("provider_payment_id", TEXT),
        ("purpose", TEXT), ("status", TEXT), ("amount_minor", BIGINT), ("currency", TEXT),
        ("confirmation_url", TEXT), ("reason", TEXT), ("paid_at", TIMESTAMPTZ),
        ("created_at", TIMESTAMPTZ), ("updated_at", TIMESTAMPTZ),
        ("receipt", JSONB), ("receipt_registration", TEXT), ("discount_minor", BIGINT), ("promo_code", TEXT),
    ),
)
T = TABLE.name

TERMINAL = frozenset({"succeeded", "canceled"})


def _row(state: State, ev: ProjectedEvent, *, purpose: str, amount: dict | None) -> Row | None:
    """The payment's row, created on its first event (whichever that is)."""
    if ev.user_id is None:
        return None
    d = ev.data
    row = state.claim(T, d["payment_id"], ev.user_id)
    if row is FOREIGN:
        return None
    if row is None:
        if amount is None:  # PaymentStateUnknown first: the subscription's price is what was asked
            sub = state.owned("subscriptions", d["subscription_id"], ev.user_id)
            price_minor, cur = (sub["price_minor"], sub["currency"]) if sub else (0, "RUB")
        else:
            price_minor, cur = minor(amount), currency(amount)
        row = {
            "payment_id": d["payment_id"],
            "subscription_id": d["subscription_id"],
            "user_id": ev.user_id,
            "provider_payment_id": None,
            "purpose": purpose,
            "status": "created",
            "amount_minor": price_minor,
            "currency": cur,
            "confirmation_url": None,
            "reason": None,
            "paid_at": None,
            "created_at": ev.occurred_at,
            "updated_at": ev.occurred_at,
            "receipt": None,
            "receipt_registration": None,
            "discount_minor": 0,
            "promo_code": None,
        }
    promo = d.get("promo")
    if promo:  # an intent: `amount` is what is charged, the discount is beside it
        row["discount_minor"], row["promo_code"] = minor(promo["discount"]), promo["code"]
    return row


def receipt_json(data: dict) -> str | None:
    """The receipt recorded in an intent event, as JSONB text (None for intents recorded before receipts were)."""
    receipt = data.get("receipt")
    return orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS).decode() if receipt else None


def _save(state: State, ev: ProjectedEvent, row: Row) -> None:
    row["updated_at"] = ev.occurred_at
    state.put(T, row["payment_id"], row)


def _checkout_started(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev, purpose="purchase", amount=ev.data["amount"])
    if row is not None:
        row["receipt"] = receipt_json(ev.data)
        _save(state, ev, row)


def _renewal_started(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev, purpose="renewal", amount=ev.data["amount"])
    if row is not None:
        row["receipt"] = receipt_json(ev.data)
        _save(state, ev, row)


def _upgrade_started(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev, purpose="upgrade", amount=ev.data["amount"])
    if row is not None:
        _save(state, ev, row)


def _card_check_started(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev, purpose="card_check", amount=ev.data["amount"])
    if row is not None:
        _save(state, ev, row)


def _recovery_started(state: State, ev: ProjectedEvent) -> None:
    row = _row(state, ev, purpose="recovery", amount=ev.data["amount"])
    if row is not None:
        _save(state, ev, row)


def _confirmation_required(state: State, ev: ProjectedEvent) -> None:
    """A renewal awaiting 3-D Secure: its page is where the customer confirms it."""
    row = _row(state, ev, purpose="renewal", amount=ev.data["amount"])
    if row is None:
        return
    row["confirmation_url"] = row["confirmation_url"] or ev.data["confirmation_url"]
    _save(state, ev, row)


def _payment_created(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = _row(state, ev, purpose=d.get("purpose", "purchase"), amount=d["amount"])
    if row is None:
        return
    row["provider_payment_id"] = d["provider_payment_id"]
    row["purpose"] = d.get("purpose", row["purpose"])
    if d.get("confirmation_url"):
        row["confirmation_url"] = d["confirmation_url"]
    if row["status"] not in TERMINAL:
        row["status"] = "pending"
    _save(state, ev, row)


def _payment_succeeded(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = _row(state, ev, purpose=d.get("purpose", "purchase"), amount=d["amount"])
    if row is None:
        return
    row.update(
        provider_payment_id=d["provider_payment_id"],
        purpose=d.get("purpose", row["purpose"]),
        status="succeeded",
        amount_minor=minor(d["amount"]),
        currency=currency(d["amount"]),
        paid_at=ts(d["paid_at"]),
        reason=None,
        receipt_registration=d.get("receipt_registration"),
    )
    _save(state, ev, row)


def _payment_failed(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = _row(state, ev, purpose=d.get("purpose", "purchase"), amount=d["amount"])
    if row is None:
        return
    if d.get("provider_payment_id"):
        row["provider_payment_id"] = d["provider_payment_id"]
    row["status"] = "canceled"
    row["reason"] = d["reason"]
    _save(state, ev, row)


def _payment_state_unknown(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    row = _row(state, ev, purpose=d.get("purpose", "purchase"), amount=None)
    if row is None:
        return
    if d.get("provider_payment_id"):
        row["provider_payment_id"] = d["provider_payment_id"]
    if row["status"] not in TERMINAL:
        row["status"] = "unknown"
        row["reason"] = d.get("detail")
    _save(state, ev, row)


def _receipt_registration(state: State, ev: ProjectedEvent) -> None:
    d = ev.data
    if d.get("refund_id") or not d.get("payment_id") or ev.user_id is None:
        return
    row = state.owned(T, d["payment_id"], ev.user_id)
    if row is not None:
        row["receipt_registration"] = d["status"]
        _save(state, ev, row)


HANDLERS = {
    "CheckoutStarted": _checkout_started,
    "RenewalStarted": _renewal_started,
    "UpgradeStarted": _upgrade_started,
    "RecoveryStarted": _recovery_started,
    "RenewalConfirmationRequired": _confirmation_required,
    "CardCheckStarted": _card_check_started,
    "PaymentCreated": _payment_created,
    "PaymentSucceeded": _payment_succeeded,
    "PaymentFailed": _payment_failed,
    "PaymentStateUnknown": _payment_state_unknown,
    "ReceiptRegistrationChanged": _receipt_registration,
}
