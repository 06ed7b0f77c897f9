"""Events: the facts of the billing log, in the past tense.

The event store is the one source of truth; read models, emails and the admin timeline are
derived from these payloads alone. Events that lead to an email carry the `customer`, so the
notifier never has to ask another service who to write to.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from schemas.base import Money, Payload, StrictModel, UtcDatetime
from schemas.commands import DEFAULT_PRODUCT, Customer, PlanId, Product
from schemas.receipts import PaymentMode, PaymentSubject, Receipt, ReceiptRegistration, VatCode

PaymentPurpose = Literal["purchase", "renewal", "recovery", "card_check", "upgrade"]
"""Why a payment was taken: a checkout, an automatic renewal, a past-due customer paying now, a card
check (refunded at once), or the prorated difference of a plan upgrade."""


class Event(Payload):
    kind: ClassVar[str] = "event"


class PaymentMethod(StrictModel):
    """A card saved at YooKassa for renewals; only its id and a human title are kept."""

    id: str
    title: str | None = None


class PlanCreated(Event):
    """Version 2 carries `price` as Money; version 1 had `price_kopecks` (see upcasters)."""

    schema_version: ClassVar[int] = 2

    plan_id: PlanId
    name: str
    price: Money
    period_days: int = Field(ge=1)
    description: str = ""
    vat_code: VatCode | None = Field(default=None, description="receipt settings; unset (plans created before them): the processor's defaults")
    payment_subject: PaymentSubject | None = None
    payment_mode: PaymentMode | None = None
    product: Product = Field(default=DEFAULT_PRODUCT, description="absent before products existed: every such plan is the default product's")
    trial_days: int = Field(default=0, ge=0, description="free days before the first charge, once per customer and plan (0: no trial)")


class PlanArchived(Event):
    plan_id: PlanId
    reason: str | None = None


class PlanPriceChangeScheduled(Event):
    """The plan costs `price` from `effective_at` on; `change_id` names the change (the command id)."""

    plan_id: PlanId
    change_id: UUID
    price: Money
    effective_at: UtcDatetime
    grandfather: bool = False
    reason: str | None = None


class AppliedPromo(StrictModel):
    """A promo code's discount on one charge: the terms (so a renewal recomputes it from the list price it
    charges then), the list price, the discount and how many discounted periods are still to come after
    this one. The charge's `amount` is `list_price - discount`."""

    code: str
    percent_off: int | None = None
    amount_off: Money | None = None
    periods: int = Field(ge=1)
    list_price: Money
    discount: Money
    periods_left: int = Field(ge=0, description="discounted periods still to come after this charge")


class PromoCodeCreated(Event):
    code: str
    percent_off: int | None = None
    amount_off: Money | None = None
    periods: int = Field(ge=1)
    expires_at: UtcDatetime
    max_redemptions: int | None = None
    plan_ids: list[PlanId] | None = None


class PromoCodeDeactivated(Event):
    code: str
    reason: str


class PromoCodeRedeemed(Event):
    """On the code's stream, in the same transaction as the account's CheckoutStarted: one use held
    (the usage limit and once-per-user count these), from the checkout on."""

    code: str
    user_id: str
    subscription_id: UUID
    payment_id: UUID


class PromoCodeReleased(Event):
    """The checkout that held a use failed or was abandoned: the use is free again."""

    code: str
    user_id: str
    subscription_id: UUID
    payment_id: UUID
    reason: str


class CheckoutStarted(Event):
    """The intent to charge, recorded before YooKassa is called (its key is fixed here)."""

    subscription_id: UUID
    payment_id: UUID
    plan_id: PlanId
    plan_name: str
    amount: Money
    period_days: int = Field(ge=1)
    auto_renew: bool
    customer: Customer
    idempotence_key: str
    return_url: str | None = None
    product: Product = DEFAULT_PRODUCT
    promo: AppliedPromo | None = Field(default=None, description="the promo code's discount; `amount` is already discounted")
    receipt: Receipt | None = Field(
        default=None,
        description="the 54-FZ receipt sent with the request; unset on events recorded before receipts were: the request "
        "then carries the receipt sent at the time (one service item, vat_code 1, full_payment)",
    )


class RenewalStarted(Event):
    """The intent to charge the saved payment method for the next period, recorded before YooKassa
    is called (its key is fixed here). The renewal payment's `payment_id` is derived from the
    renewal command id, which is derived from (subscription, period end, attempt)."""

    subscription_id: UUID
    payment_id: UUID
    plan_id: PlanId
    plan_name: str
    amount: Money
    period_start: UtcDatetime = Field(description="the old period end: the new period starts there")
    period_end: UtcDatetime
    attempt: int = Field(default=1, ge=1)
    payment_method_id: str
    idempotence_key: str
    customer: Customer | None = None
    promo: AppliedPromo | None = Field(default=None, description="a promo code's discount on this period; `amount` is already discounted")
    receipt: Receipt | None = Field(
        default=None,
        description="the 54-FZ receipt sent with the request; unset on events recorded before receipts were: the request "
        "then carries the receipt sent at the time (one service item, vat_code 1, full_payment)",
    )


CardCheckReason = Literal["replace_payment_method", "auto_renew", "trial"]
"""What a card check is for: a new card for renewals, turning auto-renewal on without a saved card, a trial."""


class TrialTerms(StrictModel):
    """The plan a trial subscribes to: free for `trial_days`, then `price` every `period_days`."""

    plan_id: PlanId
    plan_name: str
    price: Money
    period_days: int = Field(ge=1)
    trial_days: int = Field(ge=1)
    auto_renew: bool = True
    product: Product = DEFAULT_PRODUCT


class CardCheckStarted(Event):
    """The intent to check (and save) a card with a small payment that is refunded in full at once,
    recorded before YooKassa is called (its key is fixed here). A check never pays for a period.
    For a trial it also starts the (pending) subscription described by `trial`."""

    subscription_id: UUID
    payment_id: UUID
    reason: CardCheckReason
    amount: Money
    customer: Customer
    idempotence_key: str
    return_url: str | None = None
    trial: TrialTerms | None = None
    receipt: Receipt | None = Field(default=None, description="the 54-FZ receipt sent with the check; unset on checks recorded before receipts were")


class PaymentMethodReplaced(Event):
    """A card check succeeded: renewals of the subscription now charge this card."""

    subscription_id: UUID
    payment_id: UUID = Field(description="the card check that saved the card")
    payment_method: PaymentMethod
    previous_title: str | None = None
    check_amount: Money | None = Field(default=None, description="what the check took; it is refunded at once")
    customer: Customer | None = None


class RecoveryStarted(Event):
    """The intent to take an overdue renewal's payment from the customer on a payment page (pay now),
    recorded before YooKassa is called. It pays the same period an automatic renewal would have:
    from the old period end (`period_start`) for one period, at the renewal's amount."""

    subscription_id: UUID
    payment_id: UUID
    plan_id: PlanId
    plan_name: str
    amount: Money
    period_start: UtcDatetime = Field(description="the old period end: the new period starts there")
    period_end: UtcDatetime
    customer: Customer
    idempotence_key: str
    return_url: str | None = None
    receipt: Receipt | None = Field(default=None, description="the 54-FZ receipt sent with the request (as a renewal's)")
    promo: AppliedPromo | None = Field(default=None, description="a promo code's discount on this period, as the renewal's; `amount` is already discounted")


class RenewalConfirmationRequired(Event):
    """A renewal charge of the saved card needs the customer to confirm it (3-D Secure): YooKassa
    answered `pending` with a payment page. Recorded once per payment, so the link is emailed once."""

    subscription_id: UUID
    payment_id: UUID
    amount: Money
    confirmation_url: str
    customer: Customer


class PaymentCreated(Event):
    payment_id: UUID
    subscription_id: UUID
    provider_payment_id: str
    amount: Money
    status: str
    confirmation_url: str | None = None
    purpose: PaymentPurpose = "purchase"


class PaymentSucceeded(Event):
    payment_id: UUID
    subscription_id: UUID
    provider_payment_id: str
    amount: Money
    paid_at: UtcDatetime
    payment_method: PaymentMethod | None = None
    purpose: PaymentPurpose = "purchase"
    customer: Customer
    receipt_registration: ReceiptRegistration | None = Field(default=None, description="YooKassa's receipt_registration when we read the payment")


class PaymentFailed(Event):
    payment_id: UUID
    subscription_id: UUID
    provider_payment_id: str | None = None
    amount: Money
    reason: str = Field(description="YooKassa's cancellation reason code, e.g. insufficient_funds")
    party: str | None = None
    purpose: PaymentPurpose = "purchase"
    customer: Customer
    outcome_unknown: bool = Field(
        default=False,
        description=(
            "True when we stopped asking without ever hearing YooKassa's answer (the create's idempotence "
            "window ran out): the payment may still have succeeded, so a late answer about it is matched and "
            "settled, and no new charge for the same period starts while it is open (docs/decisions/0104)"
        ),
    )


class PaymentStateUnknown(Event):
    """YooKassa's answer was lost (timeout, 5xx, dropped connection); the janitor will ask again."""

    payment_id: UUID
    subscription_id: UUID
    provider_payment_id: str | None = None
    detail: str
    purpose: PaymentPurpose = "purchase"


class SubscriptionActivated(Event):
    subscription_id: UUID
    plan_id: PlanId
    plan_name: str
    period_start: UtcDatetime
    period_end: UtcDatetime
    amount_paid: Money
    auto_renew: bool
    payment_id: UUID | None = None
    payment_method_title: str | None = None
    granted: bool = False
    reason: str | None = None
    customer: Customer | None = None
    product: Product = DEFAULT_PRODUCT
    promo: AppliedPromo | None = None
    trial: bool = Field(default=False, description="a free trial: nothing was paid, the first charge is at period_end")
    next_charge: Money | None = Field(default=None, description="for a trial: what the first renewal at period_end charges")


class RefundRequested(Event):
    """The intent to refund, recorded before YooKassa is called (its key is fixed here)."""

    refund_id: UUID
    subscription_id: UUID
    payment_id: UUID
    provider_payment_id: str
    amount: Money
    days_used: int | None = None
    days_in_period: int | None = None
    reason: str | None = None
    idempotence_key: str
    customer: Customer | None = None
    command_type: str | None = Field(default=None, description="the type of the command that asked for the refund")
    receipt: Receipt | None = Field(
        default=None,
        description="the 54-FZ receipt sent with the request; unset on events recorded before receipts were: the request "
        "then carries the receipt sent at the time (one service item, vat_code 1, full_payment)",
    )
    purpose: PaymentPurpose | None = Field(default=None, description="the refunded payment's purpose (card_check: a check's money going back)")


class RefundCreated(Event):
    refund_id: UUID
    subscription_id: UUID
    provider_refund_id: str
    status: str


class RefundSucceeded(Event):
    refund_id: UUID
    subscription_id: UUID
    payment_id: UUID
    provider_refund_id: str
    amount: Money
    days_used: int | None = None
    customer: Customer | None = None
    dashboard: bool = Field(
        default=False,
        description=(
            "True for a refund we never asked for: made in YooKassa's dashboard (by an operator) and recorded when its "
            "notification or a reconciliation found it; no RefundRequested precedes it (docs/decisions/0122)"
        ),
    )
    receipt_registration: ReceiptRegistration | None = Field(default=None, description="YooKassa's receipt_registration when we read the refund")


class RefundFailed(Event):
    refund_id: UUID
    subscription_id: UUID
    amount: Money
    reason: str
    customer: Customer | None = None
    outcome_unknown: bool = Field(
        default=False,
        description=(
            "True when we stopped asking without ever hearing YooKassa's answer: the refund may still have been "
            "made, so its amount stays reserved (never refunded twice) until a late answer settles it"
        ),
    )


class RefundStateUnknown(Event):
    refund_id: UUID
    subscription_id: UUID
    provider_refund_id: str | None = None
    detail: str


class SubscriptionCanceled(Event):
    subscription_id: UUID
    mode: Literal["refund_now", "at_period_end", "admin", "duplicate_payment"]
    effective_at: UtcDatetime = Field(description="when access ends")
    reason: str | None = None
    refund_id: UUID | None = None
    refund_amount: Money | None = None
    customer: Customer | None = None


class AutoRenewChanged(Event):
    subscription_id: UUID
    enabled: bool
    reason: str | None = None
    customer: Customer | None = None


class SubscriptionRenewed(Event):
    subscription_id: UUID
    payment_id: UUID
    period_start: UtcDatetime
    period_end: UtcDatetime
    amount: Money
    customer: Customer | None = None
    promo: AppliedPromo | None = None
    purpose: PaymentPurpose = Field(default="renewal", description="recovery: the customer paid an overdue renewal now")
    plan_id: PlanId | None = Field(default=None, description="set when a scheduled downgrade took effect with this renewal: the new plan")
    plan_name: str | None = None
    previous_plan_name: str | None = None


class CreditPart(StrictModel):
    """Part of a switch credit: the unused value of one payment carried into the new period."""

    payment_id: UUID
    amount: Money


class UpgradeStarted(Event):
    """The intent to charge a plan upgrade, recorded before YooKassa is called (its key is fixed here).

    amount = price − credit, where credit = the refund the current period would get now
    (`rules/refunds.py`), carried from the payments in `credit_from` (docs/decisions/0119)."""

    subscription_id: UUID
    payment_id: UUID
    from_plan_id: PlanId
    from_plan_name: str
    replaces_period_start: UtcDatetime = Field(description="the period the credit was computed on: the switch applies only to it")
    plan_id: PlanId
    plan_name: str
    price: Money
    period_days: int = Field(ge=1)
    amount: Money
    credit: Money
    credit_days_used: int
    credit_days_in_period: int
    credit_from: list[CreditPart] = Field(default_factory=list)
    payment_method_id: str | None = Field(default=None, description="the saved card; none: the customer confirms on a payment page")
    return_url: str | None = None
    idempotence_key: str
    customer: Customer
    receipt: Receipt | None = Field(default=None, description="the 54-FZ receipt sent with the charge (the plan's receipt settings)")


class PlanSwitched(Event):
    """An upgrade took effect: the subscription is on the new plan, with a new period from now."""

    subscription_id: UUID
    from_plan_id: PlanId
    from_plan_name: str
    plan_id: PlanId
    plan_name: str
    price: Money
    period_days: int = Field(ge=1)
    period_start: UtcDatetime
    period_end: UtcDatetime
    payment_id: UUID | None = Field(default=None, description="the upgrade payment; none when the credit covered the price")
    amount_charged: Money
    credit: Money
    credit_from: list[CreditPart] = Field(default_factory=list)
    customer: Customer | None = None


class PlanSwitchScheduled(Event):
    """A downgrade: the renewal at `effective_at` charges the new plan and moves the subscription to it."""

    subscription_id: UUID
    from_plan_name: str
    plan_id: PlanId
    plan_name: str
    price: Money
    period_days: int = Field(ge=1)
    effective_at: UtcDatetime
    customer: Customer | None = None


class PlanSwitchWithdrawn(Event):
    """A scheduled downgrade was withdrawn (the customer switched back to the current plan)."""

    subscription_id: UUID
    plan_id: PlanId
    plan_name: str
    reason: str | None = None
    customer: Customer | None = None


class RenewalFailed(Event):
    subscription_id: UUID
    payment_id: UUID | None = None
    attempt: int = Field(ge=1)
    reason: str
    next_retry_at: UtcDatetime | None = None
    access_until: UtcDatetime | None = None
    final: bool = False
    customer: Customer | None = None


class SubscriptionExpired(Event):
    subscription_id: UUID
    expired_at: UtcDatetime
    reason: str
    customer: Customer | None = None


class SubscriptionExpiringSoon(Event):
    subscription_id: UUID
    period_end: UtcDatetime
    auto_renew: bool
    customer: Customer | None = None
    trial: bool = Field(default=False, description="the period ending is a free trial")
    next_charge: Money | None = Field(default=None, description="what renewing at period_end charges")


class SubscriptionAdjusted(Event):
    """An operator moved the period end (extend); the reason is kept for the audit trail."""

    subscription_id: UUID
    days: int
    period_end: UtcDatetime
    reason: str
    customer: Customer | None = None


class ReceiptRegistrationChanged(Event):
    """A later read of a settled payment or refund found its receipt's registration moved on
    (pending → succeeded or canceled): the receipt reached the tax service, or did not."""

    subscription_id: UUID
    payment_id: UUID | None = None
    refund_id: UUID | None = None
    status: ReceiptRegistration
class PriceChangeAnnounced(Event):
    """A subscriber was told that renewals from `first_renewal_at` on cost `new_price`; the notice is
    at least the configured number of days before that renewal (docs/decisions/0120)."""

    subscription_id: UUID
    plan_id: PlanId
    change_id: UUID
    old_price: Money
    new_price: Money
    effective_at: UtcDatetime = Field(description="when the plan's new price took or takes effect")
    first_renewal_at: UtcDatetime = Field(description="the start of the first period charged at the new price")
    customer: Customer | None = None


class CommandOutcome(StrictModel):
    subscription_id: UUID | None = None
    payment_id: UUID | None = None
    refund_id: UUID | None = None
    plan_id: PlanId | None = None
    confirmation_url: str | None = None
    refund_amount: Money | None = None
    message: str | None = None


class CommandSucceeded(Event):
    """The terminal record of a handled command, so every command shows how it ended."""

    command_id: UUID
    command_type: str
    outcome: CommandOutcome = CommandOutcome()


class CommandRejected(Event):
    command_id: UUID
    command_type: str
    code: str = Field(description="machine-readable, e.g. plan_archived")
    reason: str = Field(description="a sentence a person understands")


class CommandFailed(Event):
    """A command that could not be handled after bounded retries (dead-lettered)."""

    command_id: UUID
    command_type: str
    reason: str


EVENT_TYPES: tuple[type[Event], ...] = (
    PlanCreated,
    PlanArchived,
    PlanPriceChangeScheduled,
    PromoCodeCreated,
    PromoCodeDeactivated,
    PromoCodeRedeemed,
    PromoCodeReleased,
    CheckoutStarted,
    RenewalStarted,
    RecoveryStarted,
    RenewalConfirmationRequired,
    CardCheckStarted,
    PaymentMethodReplaced,
    PaymentCreated,
    PaymentSucceeded,
    PaymentFailed,
    PaymentStateUnknown,
    SubscriptionActivated,
    RefundRequested,
    RefundCreated,
    RefundSucceeded,
    RefundFailed,
    RefundStateUnknown,
    SubscriptionCanceled,
    AutoRenewChanged,
    SubscriptionRenewed,
    RenewalFailed,
    SubscriptionExpired,
    SubscriptionExpiringSoon,
    SubscriptionAdjusted,
    UpgradeStarted,
    PlanSwitched,
    PlanSwitchScheduled,
    PlanSwitchWithdrawn,
    ReceiptRegistrationChanged,
    PriceChangeAnnounced,
    CommandSucceeded,
    CommandRejected,
    CommandFailed,
)
