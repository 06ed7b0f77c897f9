"""54-FZ fiscal receipts in YooKassa's own vocabulary (yookassa.ru/developers/54fz/parameters-values).

A receipt goes with every payment and every refund. Its settings come from the plan (VAT code,
payment subject, payment mode) and the shop (tax system code); the receipt actually sent is
recorded in the intent event (CheckoutStarted, RenewalStarted, RefundRequested), so a retry sends
the same one and the admin shows what the tax service received.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Money, StrictModel

VatCode = Annotated[int, Field(ge=1, le=12, description="YooKassa vat_code", examples=[1])]
"""1 no VAT, 2 0 %, 3 10 %, 4 20 %, 5 10/110, 6 20/120, 7 5 %, 8 7 %, 9 5/105, 10 7/107, 11 22 %,
12 22/122 (11 and 12 since 1 January 2026)."""

TaxSystemCode = Annotated[int, Field(ge=1, le=6, description="YooKassa tax_system_code", examples=[2])]
"""1 general (ОСН), 2 simplified on income (УСН доходы), 3 simplified income minus expenses,
4 ЕНВД, 5 ЕСХН, 6 patent."""

PaymentSubject = Literal[
    "commodity", "excise", "job", "service", "gambling_bet", "gambling_prize", "lottery", "lottery_prize",
    "intellectual_activity", "payment", "agent_commission", "property_right", "non_operating_gain",
    "insurance_premium", "sales_tax", "resort_fee", "composite", "another",
]
"""YooKassa `payment_subject` (признак предмета расчёта); a subscription is a `service`."""

PaymentMode = Literal[
    "full_prepayment", "partial_prepayment", "advance", "full_payment", "partial_payment", "credit", "credit_payment",
]
"""YooKassa `payment_mode` (признак способа расчёта)."""

RECEIPT_REGISTRATION = ("pending", "succeeded", "canceled")
ReceiptRegistration = Literal["pending", "succeeded", "canceled"]
"""YooKassa's `receipt_registration` of a payment or a refund: the receipt's way to the tax service."""


class ReceiptItem(StrictModel):
    description: str = Field(min_length=1, max_length=128)
    quantity: str = Field(default="1.00", pattern=r"^\d+(\.\d+)?$")
    amount: Money
    vat_code: VatCode
    payment_subject: PaymentSubject
    payment_mode: PaymentMode


class Receipt(StrictModel):
    """The receipt as sent to YooKassa with a payment or a refund."""

    email: str = Field(max_length=320, description="the customer's contact for the receipt")
    items: list[ReceiptItem] = Field(min_length=1, max_length=100)
    tax_system_code: TaxSystemCode | None = None
