"""What the processor asks YooKassa to do, and what it can hear back — as plain data.

A provider step is decided by the pure domain and executed by the gateway. Its request body is
rebuilt from the recorded intent event alone (CheckoutStarted, RenewalStarted, RefundRequested),
so a retry after any crash sends the SAME body with the SAME Idempotence-Key and YooKassa answers
with the SAME payment or refund (a different body under one key would be refused with a 400).

Outcomes are deliberately few: YooKassa's view of the object (pending / succeeded / canceled with
a reason), `ProviderUnknown` (timeout, dropped connection, 5xx, 202, 429: the operation may or may
not have happened — ask again later, never conclude it failed) and `ProviderRefused` (a definitive
400: the request itself was refused, so nothing was created). 401/403 are not refusals of the
request but of our credentials: unknown, so the operation stays open until an operator fixes
them (docs/decisions/0106).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from schemas import (
    CardCheckStarted,
    CheckoutStarted,
    Customer,
    Money,
    Receipt,
    ReceiptItem,
    RecoveryStarted,
    RefundRequested,
    RenewalStarted,
    UpgradeStarted,
)

DESCRIPTION_MAX = 128  # YooKassa's limit for payment and receipt item descriptions


@dataclass(frozen=True, slots=True)
class CreatePayment:
    payment_id: UUID
    idempotence_key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FindPayment:
    payment_id: UUID | None
    """Ours; None when a notification names a YooKassa payment we never heard the id of (matched
    by the `metadata.payment_id` YooKassa returns with it, see docs/decisions/0104)."""
    provider_payment_id: str


@dataclass(frozen=True, slots=True)
class CreateRefund:
    refund_id: UUID
    idempotence_key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FindRefund:
    refund_id: UUID | None
    """Ours; None when a notification names a YooKassa refund we never heard the id of (matched by
    its payment and amount to a refund we stopped asking about, see docs/decisions/0104)."""
    provider_refund_id: str


ProviderStep = CreatePayment | FindPayment | CreateRefund | FindRefund


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """A payment as YooKassa reports it."""

    id: str
    status: str  # pending | waiting_for_capture | succeeded | canceled
    amount: Money | None = None
    confirmation_url: str | None = None
    captured_at: datetime | None = None
    cancellation_reason: str | None = None
    cancellation_party: str | None = None
    payment_method_id: str | None = None
    payment_method_saved: bool = False
    payment_method_title: str | None = None
    receipt_registration: str | None = None
    """pending | succeeded | canceled: the receipt's way to the tax service (None: no receipt)."""
    metadata: dict[str, str] | None = None
    """What we sent as `metadata` (user_id, subscription_id, payment_id, command_id): as YooKassa
    returns it from its API (never from a notification body), it ties the payment to ours."""
    created_at: datetime | None = None
    """When YooKassa created it (its lists are filtered by this; reconciliation windows use it)."""

    @property
    def our_payment_id(self) -> str | None:
        return (self.metadata or {}).get("payment_id")


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    """A refund as YooKassa reports it."""

    id: str
    status: str  # pending | succeeded | canceled
    amount: Money | None = None
    cancellation_reason: str | None = None
    payment_id: str | None = None
    """YooKassa's id of the refunded payment."""
    created_at: datetime | None = None
    receipt_registration: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderUnknown:
    """The answer was lost or not final: the operation may or may not have happened."""

    detail: str


@dataclass(frozen=True, slots=True)
class ProviderRefused:
    """A definitive refusal of the request (400): nothing was created."""

    code: str
    detail: str
    outcome_unknown: bool = False
    """Not YooKassa's refusal but ours: we stop asking about a create whose answer never came
    within the idempotence window. It may have happened after all (docs/decisions/0104)."""


ProviderOutcome = ProviderPayment | ProviderRefund | ProviderUnknown | ProviderRefused


def _money(amount: Money) -> dict[str, str]:
    return {"value": f"{amount.amount:.2f}", "currency": amount.currency}


@dataclass(frozen=True, slots=True)
class ReceiptSettings:
    """What a receipt says besides who, what and how much: per plan (VAT code, payment subject and
    mode; unset on the plan → the processor's defaults) and per shop (the tax system code)."""

    vat_code: int = 1
    payment_subject: str = "service"
    payment_mode: str = "full_payment"
    tax_system_code: int | None = None


LEGACY_RECEIPT = ReceiptSettings()
"""What every receipt said before receipts were configurable: a request rebuilt from an intent
recorded then (no `receipt` on it) must send exactly that again (same Idempotence-Key, same body)."""


def build_receipt(customer: Customer | None, description: str, amount: Money, settings: ReceiptSettings) -> Receipt | None:
    """THE receipt builder: one item for the whole amount, recorded in the intent event before the
    request is made. Every payment or refund kind calls this (None without a customer: no email)."""
    if customer is None:
        return None
    item = ReceiptItem(
        description=description[:DESCRIPTION_MAX],
        amount=amount,
        vat_code=settings.vat_code,
        payment_subject=settings.payment_subject,  # type: ignore[arg-type]
        payment_mode=settings.payment_mode,  # type: ignore[arg-type]
    )
    return Receipt(email=customer.email, items=[item], tax_system_code=settings.tax_system_code)


def settings_of(receipt: Receipt | None, tax_system_code: int | None = None) -> ReceiptSettings:
    """The settings a recorded receipt was built with (its first item's); legacy when there is none."""
    if receipt is None:
        return LEGACY_RECEIPT
    item = receipt.items[0]
    return ReceiptSettings(item.vat_code, item.payment_subject, item.payment_mode, receipt.tax_system_code)


def receipt_body(recorded: Receipt | None, customer: Customer | None, description: str, amount: Money) -> dict[str, Any] | None:
    """The `receipt` of a request, from the receipt recorded in its intent event; an intent
    recorded before receipts were (None) gets the receipt sent then."""
    receipt = recorded or build_receipt(customer, description, amount, LEGACY_RECEIPT)
    if receipt is None:
        return None
    body: dict[str, Any] = {
        "customer": {"email": receipt.email},
        "items": [
            {
                "description": item.description,
                "quantity": item.quantity,
                "amount": _money(item.amount),
                "vat_code": item.vat_code,
                "payment_subject": item.payment_subject,
                "payment_mode": item.payment_mode,
            }
            for item in receipt.items
        ],
    }
    if receipt.tax_system_code is not None:
        body["tax_system_code"] = receipt.tax_system_code
    return body


def _receipt(customer: Customer, description: str, amount: Money, recorded: Receipt | None = None) -> dict[str, Any]:
    """Kept for request builders written against the old signature: the recorded receipt, else the legacy one."""
    body = receipt_body(recorded, customer, description, amount)
    assert body is not None
    return body


def purchase_request(user_id: str, command_id: UUID, intent: CheckoutStarted) -> dict[str, Any]:
    """The `POST /payments` body of a purchase, from the recorded CheckoutStarted only."""
    description = f"Subscription: {intent.plan_name}"[:DESCRIPTION_MAX]
    return {
        "amount": _money(intent.amount),
        "capture": True,
        "confirmation": {"type": "redirect", "return_url": intent.return_url},
        "save_payment_method": intent.auto_renew,
        "description": description,
        "metadata": {
            "user_id": user_id,
            "subscription_id": str(intent.subscription_id),
            "payment_id": str(intent.payment_id),
            "command_id": str(command_id),
        },
        "receipt": receipt_body(intent.receipt, intent.customer, intent.plan_name, intent.amount),
    }


CARD_CHECK_DESCRIPTION = "Card check (refunded at once)"


def card_check_request(user_id: str, command_id: UUID, intent: CardCheckStarted) -> dict[str, Any]:
    """The `POST /payments` body of a card check, from the recorded CardCheckStarted only: a small
    redirect payment that saves the card; it is refunded in full as soon as it succeeds."""
    description = CARD_CHECK_DESCRIPTION
    return {
        "amount": _money(intent.amount),
        "capture": True,
        "confirmation": {"type": "redirect", "return_url": intent.return_url},
        "save_payment_method": True,
        "description": description,
        "metadata": {
            "user_id": user_id,
            "subscription_id": str(intent.subscription_id),
            "payment_id": str(intent.payment_id),
            "command_id": str(command_id),
            "purpose": "card_check",
        },
        "receipt": receipt_body(intent.receipt, intent.customer, description, intent.amount),
    }


def renewal_request(user_id: str, command_id: UUID, intent: RenewalStarted) -> dict[str, Any]:
    """The `POST /payments` body of a renewal: the saved method, no confirmation."""
    description = f"Renewal: {intent.plan_name}"[:DESCRIPTION_MAX]
    body: dict[str, Any] = {
        "amount": _money(intent.amount),
        "capture": True,
        "payment_method_id": intent.payment_method_id,
        "description": description,
        "metadata": {
            "user_id": user_id,
            "subscription_id": str(intent.subscription_id),
            "payment_id": str(intent.payment_id),
            "command_id": str(command_id),
            "purpose": "renewal",
        },
    }
    if (receipt := receipt_body(intent.receipt, intent.customer, intent.plan_name, intent.amount)) is not None:
        body["receipt"] = receipt
    return body


def upgrade_request(user_id: str, command_id: UUID, intent: UpgradeStarted) -> dict[str, Any]:
    """The `POST /payments` body of an upgrade: the saved card when there is one (no confirmation),
    else a payment page that saves the card for the renewals of the new plan."""
    description = f"Upgrade: {intent.plan_name}"[:DESCRIPTION_MAX]
    body: dict[str, Any] = {
        "amount": _money(intent.amount),
        "capture": True,
        "description": description,
        "metadata": {
            "user_id": user_id,
            "subscription_id": str(intent.subscription_id),
            "payment_id": str(intent.payment_id),
            "command_id": str(command_id),
            "purpose": "upgrade",
        },
        "receipt": receipt_body(intent.receipt, intent.customer, intent.plan_name, intent.amount),
    }
    if intent.payment_method_id:
        body["payment_method_id"] = intent.payment_method_id
    else:
        body["confirmation"] = {"type": "redirect", "return_url": intent.return_url}
        body["save_payment_method"] = True
    return body


def recovery_request(user_id: str, command_id: UUID, intent: RecoveryStarted) -> dict[str, Any]:
    """The `POST /payments` body of a past-due customer paying now: a payment page (any card), and
    the card saved, since it replaces the one that failed for later renewals."""
    return {
        "amount": _money(intent.amount),
        "capture": True,
        "confirmation": {"type": "redirect", "return_url": intent.return_url},
        "save_payment_method": True,
        "description": f"Renewal: {intent.plan_name}"[:DESCRIPTION_MAX],
        "metadata": {
            "user_id": user_id,
            "subscription_id": str(intent.subscription_id),
            "payment_id": str(intent.payment_id),
            "command_id": str(command_id),
            "purpose": "recovery",
        },
        "receipt": receipt_body(intent.receipt, intent.customer, intent.plan_name, intent.amount),
    }


def refund_request(intent: RefundRequested, plan_name: str) -> dict[str, Any]:
    """The `POST /refunds` body, from the recorded RefundRequested (and the plan's name) only."""
    body: dict[str, Any] = {
        "payment_id": intent.provider_payment_id,
        "amount": _money(intent.amount),
        "description": (intent.reason or f"Refund: {plan_name}")[:250],
    }
    if (receipt := receipt_body(intent.receipt, intent.customer, plan_name, intent.amount)) is not None:
        body["receipt"] = receipt
    return body
