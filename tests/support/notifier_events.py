"""Realistic billing events for the notifier's tests: one builder per emailed event type.

Each builder returns an `Envelope` as the processor would append it (account stream, customer
captured from the token), with ids unique per call so tests never collide on the shared topic or
the notifier's table.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas import Actor, Envelope, Metadata, Money, account_stream, new_envelope
from schemas.base import Payload
from schemas.commands import Customer
from schemas.events import (
    PlanSwitched,
    PlanSwitchScheduled,
    AutoRenewChanged,
    CheckoutStarted,
    PaymentFailed,
    PaymentMethod,
    PaymentMethodReplaced,
    PaymentSucceeded,
    RefundFailed,
    RefundRequested,
    RefundSucceeded,
    RenewalConfirmationRequired,
    RenewalFailed,
    PriceChangeAnnounced,
    SubscriptionActivated,
    SubscriptionCanceled,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionRenewed,
)

T0 = datetime(2026, 3, 5, 9, 15, tzinfo=timezone.utc)
PRICE = Money(amount="1490.00", currency="RUB")


def customer(locale: str = "ru", email: str | None = None) -> Customer:
    return Customer(email=email or f"u{uuid.uuid4().hex[:10]}@example.com", locale=locale)  # type: ignore[arg-type]


def envelope(payload: Payload, user_id: str, occurred_at: datetime = T0) -> Envelope:
    return new_envelope(
        payload,
        stream_id=account_stream(user_id),
        metadata=Metadata(correlation_id=str(uuid.uuid4()), actor=Actor(kind="system", id="tests")),
        occurred_at=occurred_at,
    )


class Account:
    """One user with one subscription; builders produce that subscription's events."""

    def __init__(self, locale: str = "ru", email: str | None = None, plan_name: str = "Месяц") -> None:
        self.user_id = f"user-{uuid.uuid4().hex[:12]}"
        self.customer = customer(locale, email)
        self.subscription_id = uuid.uuid4()
        self.payment_id = uuid.uuid4()
        self.refund_id = uuid.uuid4()
        self.plan_name = plan_name

    def _env(self, payload: Payload, occurred_at: datetime = T0) -> Envelope:
        return envelope(payload, self.user_id, occurred_at)

    def checkout_started(self, **kw: Any) -> Envelope:
        return self._env(CheckoutStarted(**{
            "subscription_id": self.subscription_id, "payment_id": self.payment_id, "plan_id": "monthly",
            "plan_name": self.plan_name, "amount": PRICE, "period_days": 30, "auto_renew": True,
            "customer": self.customer, "idempotence_key": str(uuid.uuid4()), **kw}))

    def payment_succeeded(self, **kw: Any) -> Envelope:
        return self._env(PaymentSucceeded(**{
            "payment_id": self.payment_id, "subscription_id": self.subscription_id,
            "provider_payment_id": str(uuid.uuid4()), "amount": PRICE, "paid_at": T0,
            "customer": self.customer, **kw}))

    def activated(self, **kw: Any) -> Envelope:
        return self._env(SubscriptionActivated(**{
            "subscription_id": self.subscription_id, "plan_id": "monthly", "plan_name": self.plan_name,
            "period_start": T0, "period_end": T0 + timedelta(days=30), "amount_paid": PRICE,
            "auto_renew": True, "payment_id": self.payment_id, "payment_method_title": "Bank card *4242",
            "customer": self.customer, **kw}))

    def payment_failed(self, reason: str = "insufficient_funds", **kw: Any) -> Envelope:
        return self._env(PaymentFailed(**{
            "payment_id": self.payment_id, "subscription_id": self.subscription_id,
            "provider_payment_id": str(uuid.uuid4()), "amount": PRICE, "reason": reason,
            "party": "payment_network", "customer": self.customer, **kw}))

    def refund_requested(self, **kw: Any) -> Envelope:
        return self._env(RefundRequested(**{
            "refund_id": self.refund_id, "subscription_id": self.subscription_id, "payment_id": self.payment_id,
            "provider_payment_id": str(uuid.uuid4()), "amount": Money(amount="1192.00"), "days_used": 6,
            "days_in_period": 30, "idempotence_key": str(uuid.uuid4()), "customer": self.customer, **kw}))

    def refund_succeeded(self, **kw: Any) -> Envelope:
        return self._env(RefundSucceeded(**{
            "refund_id": self.refund_id, "subscription_id": self.subscription_id, "payment_id": self.payment_id,
            "provider_refund_id": str(uuid.uuid4()), "amount": Money(amount="1192.00"), "days_used": 6,
            "customer": self.customer, **kw}))

    def refund_failed(self, **kw: Any) -> Envelope:
        return self._env(RefundFailed(**{
            "refund_id": self.refund_id, "subscription_id": self.subscription_id, "amount": Money(amount="1192.00"),
            "reason": "general_decline", "customer": self.customer, **kw}))

    def canceled(self, mode: str = "refund_now", **kw: Any) -> Envelope:
        defaults: dict[str, Any] = {"refund_amount": Money(amount="1192.00"), "refund_id": self.refund_id} if mode in ("refund_now", "duplicate_payment") else {}
        return self._env(SubscriptionCanceled(**{
            "subscription_id": self.subscription_id, "mode": mode,
            "effective_at": T0 if mode != "at_period_end" else T0 + timedelta(days=30),
            "customer": self.customer, **defaults, **kw}))

    def auto_renew_changed(self, enabled: bool = False, **kw: Any) -> Envelope:
        return self._env(AutoRenewChanged(**{
            "subscription_id": self.subscription_id, "enabled": enabled, "customer": self.customer, **kw}))

    def renewed(self, **kw: Any) -> Envelope:
        return self._env(SubscriptionRenewed(**{
            "subscription_id": self.subscription_id, "payment_id": uuid.uuid4(),
            "period_start": T0 + timedelta(days=30), "period_end": T0 + timedelta(days=60), "amount": PRICE,
            "customer": self.customer, **kw}))

    def confirmation_required(self, **kw: Any) -> Envelope:
        return self._env(RenewalConfirmationRequired(**{
            "subscription_id": self.subscription_id, "payment_id": uuid.uuid4(), "amount": PRICE,
            "confirmation_url": "http://127.0.0.1:8010/checkout/2f9d7a1c-000f-5000-8000-000000000001",
            "customer": self.customer, **kw}))

    def renewal_failed(self, final: bool = False, **kw: Any) -> Envelope:
        values: dict[str, Any] = {
            "subscription_id": self.subscription_id, "payment_id": uuid.uuid4(), "attempt": 3 if final else 1,
            "reason": "insufficient_funds", "final": final, "customer": self.customer,
            "access_until": T0 + timedelta(days=35),
        }
        if not final:
            values["next_retry_at"] = T0 + timedelta(days=31, hours=3)
        return self._env(RenewalFailed(**{**values, **kw}))

    def expiring_soon(self, auto_renew: bool = False, **kw: Any) -> Envelope:
        return self._env(SubscriptionExpiringSoon(**{
            "subscription_id": self.subscription_id, "period_end": T0 + timedelta(days=30), "auto_renew": auto_renew,
            "customer": self.customer, **kw}))

    def expired(self, **kw: Any) -> Envelope:
        return self._env(SubscriptionExpired(**{
            "subscription_id": self.subscription_id, "expired_at": T0 + timedelta(days=30), "reason": "auto_renew_off",
            "customer": self.customer, **kw}))

    def trial_started(self, **kw: Any) -> Envelope:
        return self.activated(**{"payment_id": None, "amount_paid": Money(amount="0.00"), "trial": True, "next_charge": PRICE,
                                 "period_end": T0 + timedelta(days=7), **kw})

    def card_replaced(self, **kw: Any) -> Envelope:
        return self._env(PaymentMethodReplaced(**{
            "subscription_id": self.subscription_id, "payment_id": uuid.uuid4(),
            "payment_method": PaymentMethod(id="pm-2", title="Bank card *1111"), "previous_title": "Bank card *4242",
            "check_amount": Money(amount="1.00"), "customer": self.customer, **kw}))

    def price_change(self, **kw: Any) -> Envelope:
        return self._env(PriceChangeAnnounced(**{
            "subscription_id": self.subscription_id, "plan_id": "monthly", "change_id": uuid.UUID(int=7),
            "old_price": Money(amount="299.00"), "new_price": Money(amount="349.00"), "effective_at": T0 + timedelta(days=10),
            "first_renewal_at": T0 + timedelta(days=60), "customer": self.customer, **kw}))

    def every_email(self) -> dict[str, Envelope]:
        """One event per email kind (the purchase is the activation)."""
        return {
            "purchase_succeeded": self.activated(),
            "payment_failed": self.payment_failed(),
            "refund_succeeded": self.refund_succeeded(),
            "refund_failed": self.refund_failed(),
            "subscription_canceled": self.canceled(),
            "auto_renew_off": self.auto_renew_changed(False),
            "renewal_succeeded": self.renewed(),
            "recovery_succeeded": self.renewed(purpose="recovery"),
            "renewal_confirmation": self.confirmation_required(),
            "renewal_failed": self.renewal_failed(),
            "expiring_soon": self.expiring_soon(),
            "subscription_expired": self.expired(),
            "plan_upgraded": self.upgraded(),
            "plan_switch_scheduled": self.switch_scheduled(),
            "trial_started": self.trial_started(),
            "card_replaced": self.card_replaced(),
            "price_change": self.price_change(),
        }

    def upgraded(self, **kw: Any) -> Envelope:
        return self._env(PlanSwitched(**{
            "subscription_id": self.subscription_id, "from_plan_id": "monthly", "from_plan_name": self.plan_name,
            "plan_id": "yearly", "plan_name": "Год" if self.customer.locale == "ru" else "Yearly",
            "price": Money(amount="14900.00"), "period_days": 365, "period_start": T0 + timedelta(days=10),
            "period_end": T0 + timedelta(days=375), "payment_id": uuid.uuid4(), "amount_charged": Money(amount="13907.00"),
            "credit": Money(amount="993.00"), "customer": self.customer, **kw}))

    def switch_scheduled(self, **kw: Any) -> Envelope:
        return self._env(PlanSwitchScheduled(**{
            "subscription_id": self.subscription_id, "from_plan_name": self.plan_name, "plan_id": "weekly",
            "plan_name": "Неделя" if self.customer.locale == "ru" else "Weekly", "price": Money(amount="490.00"),
            "period_days": 7, "effective_at": T0 + timedelta(days=30), "customer": self.customer, **kw}))
