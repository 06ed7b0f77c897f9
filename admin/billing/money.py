"""Money as operators read it: integer minor units shown as "1 490,00 ₽", typed as "1490.00".

Read models keep money as `*_minor` integers plus a currency; the command API takes decimal
strings with two places. These helpers are the only place the admin converts between the two.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

from babel.numbers import format_currency

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

    Raises ValueError for anything else, including more than two decimal places.
    """
    cleaned = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("₽", "")
    if cleaned.count(",") == 1 and "." not in cleaned:
        cleaned = cleaned.replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount: {text!r}") from exc
    if not value.is_finite() or value != value.quantize(CENT, rounding=ROUND_DOWN):
        raise ValueError("an amount has at most two decimal places")
    if value <= 0:
        raise ValueError("the amount must be above zero")
    return value.quantize(CENT)
