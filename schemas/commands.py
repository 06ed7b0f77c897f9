"""Commands: what a user, an operator or the system asks the billing account to do.

Commands are imperative and may be rejected. Each travels in an `Envelope` on
`billing.commands`, keyed by the user id, so commands of one account are handled in order.
Operator commands carry a mandatory `reason` that ends up in the event log.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from schemas.base import Money, Payload, StrictModel, UtcDatetime
from schemas.receipts import PaymentMode, PaymentSubject, VatCode

Locale = Literal["ru", "en"]
PlanId = str
Reason = str
DEFAULT_PRODUCT = "cinema"
"""The product every plan created before products existed belongs to (docs/decisions/0119)."""
Product = str


class Customer(StrictModel):
    """Who receives receipts and emails; captured from the token at purchase."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320, examples=["anna@example.com"])
    locale: Locale = "ru"


class Command(Payload):
    kind: ClassVar[str] = "command"


def _reason(description: str = "why the operator did this") -> object:
    return Field(min_length=1, max_length=500, description=description)


PROMO_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_-]{2,31}$"
"""Promo codes are upper-case (the API upper-cases what a customer types): 3–32 letters, digits, `-`, `_`."""


class PurchaseSubscription(Command):
    subscription_id: UUID
    plan_id: PlanId = Field(min_length=1, max_length=64)
    auto_renew: bool = True
    customer: Customer
    return_url: str | None = Field(default=None, max_length=2048)
    promo_code: str | None = Field(default=None, pattern=PROMO_CODE_PATTERN, description="a discount on the first period(s)")


class CancelSubscription(Command):
    subscription_id: UUID
    mode: Literal["refund_now", "at_period_end"]
    reason: Reason | None = Field(default=None, max_length=500)


class SetAutoRenew(Command):
    """Turning renewal on without a saved card starts a card check; it turns on when the card is saved."""

    subscription_id: UUID
    enabled: bool
    reason: Reason | None = Field(default=None, max_length=500)
    return_url: str | None = Field(default=None, max_length=2048)


class ReplacePaymentMethod(Command):
    """Save another card for renewals through a card check (a small payment refunded at once)."""

    subscription_id: UUID
    return_url: str | None = Field(default=None, max_length=2048)


class SyncPayment(Command):
    """Re-read a payment from YooKassa; the only way a provider notification changes state."""

    payment_id: UUID | None = None
    provider_payment_id: str | None = Field(default=None, min_length=36, max_length=36)
    hint_status: str | None = Field(default=None, max_length=40, description="what a notification claimed; never trusted")


class SyncRefund(Command):
    refund_id: UUID | None = None
    provider_refund_id: str | None = Field(default=None, min_length=36, max_length=36)
    hint_status: str | None = Field(default=None, max_length=40)


class PayOverdueSubscription(Command):
    """The customer pays a past-due subscription now, on a payment page (possibly with another card,
    which then replaces the saved one): one renewal charge, recorded as purpose `recovery`."""

    subscription_id: UUID
    return_url: str | None = Field(default=None, max_length=2048)


class RenewSubscription(Command):
    """Charge the next period; the command id is derived from (subscription, period_end)."""

    subscription_id: UUID
    period_end: UtcDatetime
    attempt: int = Field(default=1, ge=1)


class ExpireSubscription(Command):
    subscription_id: UUID
    period_end: UtcDatetime
    reason: Reason = Field(default="period ended", max_length=500)


class SendExpiryReminder(Command):
    subscription_id: UUID
    period_end: UtcDatetime


class ExtendSubscription(Command):
    subscription_id: UUID
    days: int = Field(ge=1, le=3650)
    reason: Reason = _reason()  # type: ignore[assignment]


class GrantSubscription(Command):
    subscription_id: UUID
    plan_id: PlanId = Field(min_length=1, max_length=64)
    days: int | None = Field(default=None, ge=1, le=3650, description="defaults to the plan's period")
    customer: Customer | None = None
    reason: Reason = _reason()  # type: ignore[assignment]


class AdminRefund(Command):
    subscription_id: UUID
    amount: Money
    reason: Reason = _reason()  # type: ignore[assignment]


class AdminCancelSubscription(Command):
    subscription_id: UUID
    refund: bool
    reason: Reason = _reason()  # type: ignore[assignment]


class CreatePlan(Command):
    plan_id: PlanId = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    price: Money
    period_days: int = Field(ge=1, le=3660)
    product: Product = Field(
        default=DEFAULT_PRODUCT,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="plans of one product are alternatives: a user has at most one live subscription per product",
    )
    description: str = Field(default="", max_length=2000)
    reason: Reason | None = Field(default=None, max_length=500)
    vat_code: VatCode | None = Field(default=None, description="the receipt's VAT code; unset: the processor's default")
    payment_subject: PaymentSubject | None = Field(default=None, description="the receipt's payment subject; unset: the processor's default")
    payment_mode: PaymentMode | None = Field(default=None, description="the receipt's payment mode; unset: the processor's default")
    trial_days: int = Field(default=0, ge=0, le=365, description="free days before the first charge (0: no trial)")


class SwitchPlan(Command):
    """Move a live subscription to another plan of its product: an upgrade (a dearer plan) now, with the
    unused days of the current period as a credit; a downgrade at the period end (docs/decisions/0119)."""

    subscription_id: UUID
    plan_id: PlanId = Field(min_length=1, max_length=64)
    return_url: str | None = Field(default=None, max_length=2048, description="where the payment page returns, when one is needed")


class ArchivePlan(Command):
    plan_id: PlanId = Field(min_length=1, max_length=64)
    reason: Reason = _reason()  # type: ignore[assignment]


class SchedulePriceChange(Command):
    """A new price for a plan from `effective_at` on: new purchases pay it from then; existing
    subscribers are told ahead and pay it from a later renewal, unless `grandfather` keeps every
    existing subscriber on their price (docs/decisions/0120)."""

    plan_id: PlanId = Field(min_length=1, max_length=64)
    price: Money
    effective_at: UtcDatetime
    grandfather: bool = False
    reason: Reason = _reason()  # type: ignore[assignment]


class AnnouncePriceChange(Command):
    """Tell one subscriber about a plan's price change (the scheduler sends it; its id is derived
    from (subscription, change), so a repeated notice is one command)."""

    subscription_id: UUID
    plan_id: PlanId = Field(min_length=1, max_length=64)
    change_id: UUID


class CreatePromoCode(Command):
    """Exactly one of `percent_off` (1–99: a free period is a grant, not a code) and `amount_off`."""

    code: str = Field(pattern=PROMO_CODE_PATTERN)
    percent_off: int | None = Field(default=None, ge=1, le=99)
    amount_off: Money | None = None
    periods: int = Field(default=1, ge=1, le=120, description="how many paid periods are discounted: 1 = the first only")
    expires_at: UtcDatetime
    max_redemptions: int | None = Field(default=None, ge=1, le=10_000_000)
    plan_ids: list[PlanId] | None = Field(default=None, max_length=50, description="only these plans (none: every plan)")
    reason: Reason = _reason()  # type: ignore[assignment]


class DeactivatePromoCode(Command):
    code: str = Field(pattern=PROMO_CODE_PATTERN)
    reason: Reason = _reason()  # type: ignore[assignment]


COMMAND_TYPES: tuple[type[Command], ...] = (
    PurchaseSubscription,
    CancelSubscription,
    SetAutoRenew,
    ReplacePaymentMethod,
    SyncPayment,
    SyncRefund,
    RenewSubscription,
    ExpireSubscription,
    SendExpiryReminder,
    PayOverdueSubscription,
    ExtendSubscription,
    GrantSubscription,
    AdminRefund,
    AdminCancelSubscription,
    CreatePlan,
    ArchivePlan,
    SwitchPlan,
    SchedulePriceChange,
    AnnouncePriceChange,
    CreatePromoCode,
    DeactivatePromoCode,
)
