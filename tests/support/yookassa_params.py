"""Request bodies for YooKassa payments and refunds that the sandbox (and YooKassa) accept."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any


def receipt(amount: str, email: str = "buyer@example.com", description: str = "Subscription") -> dict[str, Any]:
    """A 54-FZ receipt with one service item worth `amount` (what the shop must send)."""
    return {
        "customer": {"email": email},
        "items": [
            {
                "description": description,
                "quantity": "1.00",
                "amount": {"value": amount, "currency": "RUB"},
                "vat_code": 1,
                "payment_subject": "service",
                "payment_mode": "full_payment",
            }
        ],
    }


def payment_params(
    amount: str = "299.00",
    *,
    metadata: dict[str, str] | None = None,
    capture: bool = True,
    save_payment_method: bool = False,
    return_url: str = "http://127.0.0.1:8000/v1/return",
    with_receipt: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A redirect payment; metadata gets a unique `test_run` so tests can find their own."""
    params: dict[str, Any] = {
        "amount": {"value": amount, "currency": "RUB"},
        "confirmation": {"type": "redirect", "return_url": return_url},
        "capture": capture,
        "save_payment_method": save_payment_method,
        "description": "Sandbox test payment",
        "metadata": {"test_run": uuid.uuid4().hex, **(metadata or {})},
    }
    if with_receipt:
        params["receipt"] = receipt(amount)
    params.update(extra)
    return params


def autopayment_params(payment_method_id: str, amount: str = "299.00", **kwargs: Any) -> dict[str, Any]:
    """A charge of a saved payment method (no confirmation)."""
    params = payment_params(amount, **kwargs)
    del params["confirmation"]
    del params["save_payment_method"]
    params["payment_method_id"] = payment_method_id
    return params


def refund_params(payment_id: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {"payment_id": payment_id, "amount": {"value": amount, "currency": "RUB"}, **extra}


def money(value: str | Decimal) -> Decimal:
    return Decimal(str(value))
