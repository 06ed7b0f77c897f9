"""Money as operators read it: integer minor units shown as "1 490,00 ₽", typed as "1490.00".

Read models keep money as `*_minor` integers plus a currency; the command API takes decimal
strings with two places. These helpers are the only place the admin converts between the two.
"""

from __future__ import annotations

from decimal import Decimal

from babel.numbers import format_currency
from pydantic import ValidationError

from schemas import Money

CENT = Decimal("0.01")


def format_money(minor: int | None, currency: str | None = "RUB", locale: str = "ru_RU") -> str:
    """`149000, "RUB"` → `"1 490,00 ₽"` (babel's Russian format; the spaces are non-breaking)."""
    if minor is None:
        return "—"
    return format_currency(Decimal(minor) / 100, currency or "RUB", locale=locale)


def minor_to_decimal(minor: int) -> Decimal:
    """`149000` → `Decimal("1490.00")`, the wire form of an amount."""
    return (Decimal(minor) / 100).quantize(CENT)


def parse_amount(text: str) -> Decimal:
    """An operator's amount (`1490`, `1490.5`, `1 490,50`) → a Decimal with two places.

    Only the operator's spelling (spaces, a decimal comma, the ruble sign) is handled here; the
    amount itself is checked by `schemas.Money`, the one place money is parsed, so the admin refuses
    exactly what the command API refuses. Raises ValueError with one sentence a form can show.
    """
    cleaned = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("₽", "")
    if cleaned.count(",") == 1 and "." not in cleaned:
        cleaned = cleaned.replace(",", ".")
    try:
        value = Money(amount=cleaned).amount
    except ValidationError as exc:
        raise ValueError(_first_reason(exc)) from None
    if value <= 0:
        raise ValueError("the amount must be above zero")
    return value


def _first_reason(exc: ValidationError) -> str:
    """pydantic's first error as the sentence the validator raised (without "Value error, ")."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else str(error["msg"])
