"""Request and response bodies of the HTTP API, with the examples OpenAPI shows.

Requests are strict (unknown fields rejected) and every free text refuses control characters:
a NUL cannot be stored in PostgreSQL text or JSONB, so letting one through would turn a client's
typo into a server error (or a poison command) instead of a 422.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from command_api.domain.auth import USER_ID_PATTERN
from schemas import DEFAULT_PRODUCT, Money
from schemas.receipts import PaymentMode, PaymentSubject, VatCode

# Printable text: no C0 controls except tab/newline/carriage return, no DEL.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
PLAN_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"

PlanId = Annotated[str, Field(pattern=PLAN_ID_PATTERN, examples=["standard-monthly"])]
Reason = Annotated[
    str,
    Field(min_length=1, max_length=500, pattern=LINE_PATTERN, description="why; kept in the event log", examples=["customer asked by phone"]),
]
UserId = Annotated[str, Field(pattern=USER_ID_PATTERN, examples=["user-42"])]
CommandStatusName = Literal["accepted", "processing", "succeeded", "rejected", "failed"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ requests


PROMO_CODE_INPUT = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$"
PromoCodeText = Annotated[
    str, Field(pattern=PROMO_CODE_INPUT, description="a promo code; letters are matched case-insensitively", examples=["SPRING20"])
]


class PurchaseRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"plan_id": "standard-monthly", "auto_renew": True}, {"plan_id": "standard-monthly", "promo_code": "SPRING20"}]
        }
    )

    plan_id: PlanId
    auto_renew: bool = Field(default=True, description="charge the saved card for the next period")
    promo_code: PromoCodeText | None = Field(default=None, description="a discount on the first period(s); refused with a problem if it does not apply")


class CancelRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"mode": "refund_now"}]})

    mode: Literal["refund_now", "at_period_end"] = Field(
        description="refund_now: end at once, refund the unused days; at_period_end: no refund, no renewal"
    )


class SwitchRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"plan_id": "standard-yearly"},
                {"plan_id": "standard-monthly", "return_url": "https://cinema.example/account"},
            ]
        }
    )

    plan_id: PlanId = Field(
        description=(
            "another plan of the subscription's product. A dearer plan is an upgrade: charged now (the saved card, "
            "else a payment page whose URL the outcome carries) its price less the credit for the unused days, and "
            "a new period starts. Any other plan starts with the renewal at the period end. The current plan "
            "withdraws a scheduled switch."
        )
    )
    return_url: str | None = Field(default=None, max_length=2048, pattern=LINE_PATTERN, description="where the payment page returns")


class AutoRenewRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False}]})

    enabled: bool = Field(
        description="on without a saved card starts a card check: the outcome's confirmation_url, renewal turns on when it succeeds"
    )


class ReplacePaymentMethodRequest(Request):
    """A card check saves the new card: the outcome's `confirmation_url` is where the customer confirms it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{}]})


class PayNowRequest(Request):
    """Pay now needs nothing but the subscription in the path: the body is `{}`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{}]})


class AdminExtendRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"days": 7, "reason": "service outage compensation"}]})

    days: int = Field(ge=1, le=3650)
    reason: Reason


class AdminGrantRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-42",
                    "plan_id": "standard-monthly",
                    "days": 30,
                    "email": "anna@example.com",
                    "locale": "ru",
                    "reason": "promo for a beta tester",
                }
            ]
        }
    )

    user_id: UserId
    plan_id: PlanId
    days: int | None = Field(default=None, ge=1, le=3650, description="defaults to the plan's period")
    email: str = Field(max_length=320, pattern=EMAIL_PATTERN, examples=["anna@example.com"])
    locale: Literal["ru", "en"] | None = None
    reason: Reason


class AdminCancelRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"refund": True, "reason": "duplicate account"}]})

    refund: bool = Field(description="refund the unused days")
    reason: Reason


class AdminRefundRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"amount": {"amount": "100.00", "currency": "RUB"}, "reason": "goodwill"}]}
    )

    amount: Money
    reason: Reason


class AdminAutoRenewRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False, "reason": "customer request"}]})

    enabled: bool
    reason: Reason


class AdminCreatePlanRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "plan_id": "standard-monthly",
                    "name": "Standard, monthly",
                    "price": {"amount": "299.00", "currency": "RUB"},
                    "period_days": 30,
                    "description": "HD films and series",
                    "trial_days": 7,
                    "product": "cinema",
                    "reason": "launch",
                    "vat_code": 1,
                    "payment_subject": "service",
                    "payment_mode": "full_prepayment",
                }
            ]
        }
    )

    plan_id: PlanId
    name: str = Field(min_length=1, max_length=200, pattern=LINE_PATTERN)
    price: Money
    period_days: int = Field(ge=1, le=3660)
    description: str = Field(default="", max_length=2000, pattern=TEXT_PATTERN)
    trial_days: int = Field(default=0, ge=0, le=365, description="free days before the first charge, once per customer and plan (0: none)")
    product: str = Field(
        default=DEFAULT_PRODUCT, pattern=PLAN_ID_PATTERN,
        description="plans of one product are alternatives: a user holds at most one live subscription per product",
    )
    reason: Reason
    vat_code: VatCode | None = Field(
        default=None, description="54-FZ receipt VAT code (YooKassa vat_code 1..12); unset: the processor's default"
    )
    payment_subject: PaymentSubject | None = Field(default=None, description="receipt payment_subject; unset: the processor's default")
    payment_mode: PaymentMode | None = Field(default=None, description="receipt payment_mode; unset: the processor's default")


class AdminSchedulePriceChangeRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "price": {"amount": "349.00", "currency": "RUB"},
                    "effective_at": "2027-02-01T00:00:00Z",
                    "grandfather": False,
                    "reason": "content costs went up",
                }
            ]
        }
    )

    price: Money
    effective_at: datetime = Field(description="when new purchases start paying the price; must be in the future")
    grandfather: bool = Field(
        default=False,
        description="keep every existing subscriber on their price; otherwise each is emailed and pays the new price "
        "from the first renewal at least the notice period (30 days by default) after the email",
    )
    reason: Reason

    @field_validator("effective_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("effective_at must carry a timezone")
        return value


class AdminCreatePromoCodeRequest(Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "SPRING20",
                    "percent_off": 20,
                    "periods": 3,
                    "expires_at": "2027-03-31T21:00:00Z",
                    "max_redemptions": 1000,
                    "plan_ids": ["standard-monthly"],
                    "reason": "spring campaign",
                },
                {"code": "WELCOME100", "amount_off": {"amount": "100.00", "currency": "RUB"}, "periods": 1,
                 "expires_at": "2027-01-31T21:00:00Z", "reason": "newsletter"},
            ]
        }
    )

    code: PromoCodeText
    percent_off: int | None = Field(default=None, ge=1, le=99, description="1–99 (a free period is a grant, not a code)")
    amount_off: Money | None = None
    periods: int = Field(default=1, ge=1, le=120, description="how many paid periods are discounted: 1 = the first only")
    expires_at: datetime = Field(description="when the code stops being accepted (subscriptions that used it keep their discount)")
    max_redemptions: int | None = Field(default=None, ge=1, le=10_000_000, description="uses across all customers (none: no limit)")
    plan_ids: list[PlanId] | None = Field(default=None, max_length=50, description="only these plans (none: every plan)")
    reason: Reason


class AdminDeactivatePromoCodeRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "the code leaked to a coupon site"}]})

    reason: Reason


class AdminArchivePlanRequest(Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "replaced by a yearly plan"}]})

    reason: Reason


# ------------------------------------------------------------------------------ responses


class Outcome(BaseModel):
    """What a finished command produced (fields depend on the command)."""

    model_config = ConfigDict(extra="allow")

    subscription_id: uuid.UUID | None = None
    payment_id: uuid.UUID | None = None
    refund_id: uuid.UUID | None = None
    plan_id: str | None = None
    confirmation_url: str | None = Field(default=None, description="where the customer pays (purchases, pay now, a renewal awaiting 3-D Secure)")
    refund_amount: Money | None = None
    message: str | None = None


class CommandStatus(BaseModel):
    """Where a command is: accepted (published), processing, or how it ended."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "command_id": "8f14e45f-ceea-467f-a0e6-ed3a5c1b4e2d",
                    "status": "succeeded",
                    "command_type": "PurchaseSubscription",
                    "outcome": {
                        "subscription_id": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
                        "payment_id": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
                        "confirmation_url": "http://127.0.0.1:8010/pay/2d4b8a1c-000f-5000-9000-1a2b3c4d5e6f",
                    },
                    "code": None,
                    "reason": None,
                }
            ]
        }
    )

    command_id: uuid.UUID
    status: CommandStatusName
    command_type: str
    outcome: Outcome | None = None
    code: str | None = Field(default=None, description="machine-readable rejection code")
    reason: str | None = Field(default=None, description="why it was rejected or failed")


class ScheduledPriceChange(BaseModel):
    price: Money
    effective_at: datetime
    grandfather: bool = Field(description="existing subscribers keep their price")


class Plan(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "plan_id": "standard-monthly",
                    "name": "Standard, monthly",
                    "price": {"amount": "299.00", "currency": "RUB"},
                    "period_days": 30,
                    "description": "HD films and series",
                    "archived": False,
                    "trial_days": 0,
                    "scheduled_change": {
                        "price": {"amount": "349.00", "currency": "RUB"},
                        "effective_at": "2027-02-01T00:00:00Z",
                        "grandfather": False,
                    },
                    "product": "cinema",
                }
            ]
        }
    )

    plan_id: str
    name: str
    price: Money = Field(description="what a purchase pays now")
    period_days: int
    description: str
    archived: bool
    trial_days: int = Field(default=0, description="free days before the first charge (a card check starts the trial)")
    scheduled_change: ScheduledPriceChange | None = Field(default=None, description="the next price change, if one is scheduled")
    product: str = Field(default=DEFAULT_PRODUCT, description="a user holds at most one live subscription per product")


class PlanList(BaseModel):
    items: list[Plan]


class PromoCodePreview(BaseModel):
    """What a code would take off a plan's first period right now (the processor decides at purchase)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"code": "SPRING20", "plan_id": "standard-monthly", "applicable": True, "problem": None,
                 "list_price": {"amount": "299.00", "currency": "RUB"}, "discount": {"amount": "59.80", "currency": "RUB"},
                 "price": {"amount": "239.20", "currency": "RUB"}, "periods": 3, "expires_at": "2027-03-31T21:00:00Z"}
            ]
        }
    )

    code: str
    plan_id: str | None = None
    applicable: bool
    problem: str | None = Field(default=None, description="why it would be refused: promo_code_expired | promo_code_exhausted | promo_code_not_applicable")
    list_price: Money | None = None
    discount: Money | None = None
    price: Money | None = Field(default=None, description="the first period's price with the code")
    periods: int
    expires_at: datetime


_PROMO_CODE_EXAMPLE: dict[str, Any] = {
    "code": "SPRING20", "percent_off": 20, "amount_off": None, "periods": 3, "expires_at": "2027-03-31T21:00:00Z",
    "max_redemptions": 1000, "plan_ids": ["standard-monthly"], "active": True, "deactivated_reason": None, "redemptions": 412,
    "released": 17, "remaining": 588, "created_at": "2026-12-01T09:00:00Z", "updated_at": "2026-12-06T18:30:00Z",
}


class PromoCode(BaseModel):
    """An operator's view of a code: its terms and uses."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PROMO_CODE_EXAMPLE]})

    code: str
    percent_off: int | None = None
    amount_off: Money | None = None
    periods: int
    expires_at: datetime
    max_redemptions: int | None = None
    plan_ids: list[str] | None = None
    active: bool
    deactivated_reason: str | None = None
    redemptions: int = Field(description="uses held now (checkouts started or paid with it)")
    released: int = Field(description="uses given back by checkouts that failed or were abandoned")
    remaining: int | None = Field(default=None, description="uses left (none: no limit)")
    created_at: datetime
    updated_at: datetime


class PromoCodeList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_PROMO_CODE_EXAMPLE], "limit": 50, "offset": 0}]})

    items: list[PromoCode]
    limit: int
    offset: int


class Payment(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_id": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
                    "subscription_id": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
                    "purpose": "purchase",
                    "status": "succeeded",
                    "amount": {"amount": "299.00", "currency": "RUB"},
                    "confirmation_url": None,
                    "reason": None,
                    "paid_at": "2026-11-26T10:00:00Z",
                    "created_at": "2026-11-26T09:59:00Z",
                    "updated_at": "2026-11-26T10:00:00Z",
                }
            ]
        }
    )

    payment_id: uuid.UUID
    subscription_id: uuid.UUID
    purpose: str = Field(description="purchase | renewal | recovery (a past-due subscription paid now) | card_check (refunded at once) | upgrade (the prorated difference of a plan switch) | …")
    status: str = Field(description="created | pending | succeeded | canceled | unknown")
    amount: Money = Field(description="what is charged (after a promo code's discount)")
    discount: Money | None = Field(default=None, description="a promo code's discount on this charge")
    promo_code: str | None = None
    confirmation_url: str | None = None
    reason: str | None = None
    paid_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class Refund(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "refund_id": "3d813cbb-47fb-32ba-91df-831e1593ac29",
                    "subscription_id": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
                    "payment_id": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
                    "status": "succeeded",
                    "amount": {"amount": "279.06", "currency": "RUB"},
                    "days_used": 2,
                    "reason": None,
                    "created_at": "2026-11-28T10:00:00Z",
                    "updated_at": "2026-11-28T10:00:05Z",
                }
            ]
        }
    )

    refund_id: uuid.UUID
    subscription_id: uuid.UUID
    payment_id: uuid.UUID
    status: str = Field(description="requested | pending | succeeded | canceled | unknown")
    amount: Money
    days_used: int | None = None
    reason: str | None = None
    created_at: datetime
    updated_at: datetime


class PaymentList(BaseModel):
    items: list[Payment]
    limit: int
    offset: int


class RefundList(BaseModel):
    items: list[Refund]
    limit: int
    offset: int


_SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "subscription_id": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
    "plan_id": "standard-monthly",
    "plan_name": "Standard, monthly",
    "status": "active",
    "auto_renew": True,
    "cancel_at_period_end": False,
    "period_start": "2026-11-26T10:00:00Z",
    "period_end": "2026-12-26T10:00:00Z",
    "price": {"amount": "299.00", "currency": "RUB"},
    "amount_paid": {"amount": "299.00", "currency": "RUB"},
    "amount_refunded": {"amount": "0.00", "currency": "RUB"},
    "payment_method_title": "Bank card *4444",
    "status_reason": None,
    "created_at": "2026-11-26T09:59:00Z",
    "updated_at": "2026-11-26T10:00:00Z",
    "canceled_at": None,
    "expired_at": None,
    "promo_code": None,
    "discount": None,
    "promo_periods_left": 0,
    "upcoming_price": None,
    "upcoming_price_from": None,
    "product": "cinema",
    "pending_switch": {
        "plan_id": "standard-weekly",
        "plan_name": "Standard, weekly",
        "price": {"amount": "99.00", "currency": "RUB"},
        "effective_at": "2026-12-26T10:00:00Z",
    },
}


class PendingSwitch(BaseModel):
    """A downgrade that takes effect with the renewal at `effective_at`."""

    plan_id: str
    plan_name: str
    price: Money
    effective_at: datetime


class Subscription(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_SUBSCRIPTION_EXAMPLE]})

    subscription_id: uuid.UUID
    plan_id: str
    plan_name: str
    status: str = Field(description="pending_payment | active | past_due | canceled | expired | payment_failed")
    auto_renew: bool
    cancel_at_period_end: bool
    period_start: datetime | None = None
    period_end: datetime | None = None
    price: Money
    amount_paid: Money
    amount_refunded: Money
    payment_method_title: str | None = None
    status_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    promo_code: str | None = Field(default=None, description="the promo code the subscription was bought with")
    discount: Money | None = Field(default=None, description="the promo code's discount on the latest charge (`price` is the list price)")
    promo_periods_left: int = Field(default=0, description="discounted periods still to come after the latest charge")
    trial: bool = Field(default=False, description="in a free trial: nothing paid yet, the first charge is at period_end")
    upcoming_price: Money | None = Field(default=None, description="a plan price change announced to the subscriber")
    upcoming_price_from: datetime | None = Field(default=None, description="the first renewal charged the upcoming price")
    product: str = DEFAULT_PRODUCT
    pending_switch: PendingSwitch | None = Field(default=None, description="a switch scheduled for the period end")


class SubscriptionDetail(Subscription):
    model_config = ConfigDict(json_schema_extra={"examples": [{**_SUBSCRIPTION_EXAMPLE, "payments": [], "refunds": []}]})

    payments: list[Payment]
    refunds: list[Refund]


class SubscriptionList(BaseModel):
    items: list[Subscription]
    limit: int
    offset: int


class RefundQuote(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "subscription_id": "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b",
                    "amount": {"amount": "279.06", "currency": "RUB"},
                    "days_used": 2,
                    "days_in_period": 30,
                    "paid": {"amount": "299.00", "currency": "RUB"},
                    "already_refunded": {"amount": "0.00", "currency": "RUB"},
                    "refundable": True,
                    "quoted_at": "2026-11-28T10:00:00Z",
                }
            ]
        }
    )

    subscription_id: uuid.UUID
    amount: Money = Field(description="what canceling with refund_now would return now")
    days_used: int
    days_in_period: int
    paid: Money
    already_refunded: Money
    refundable: bool = Field(description="false when the subscription is not active or nothing was paid")
    quoted_at: datetime


class WebhookAck(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "accepted", "command_id": "0b5f2e34-7a4c-5d2e-9f61-2b7c0c7d1f10"}]}
    )

    status: Literal["accepted", "ignored"]
    command_id: uuid.UUID | None = None


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "checks": {"postgres": "ok", "kafka": "ok"}}]})

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
