"""A promo code's discount on one charge: one pure function, shared on purpose.

The payment processor charges the list price less this discount, and the command API previews the
same number (`GET /v1/promo-codes/{code}`). Services may not import each other, so the arithmetic
lives here, with no I/O (docs/decisions/0121).

The rule, in integer kopecks: percent off = floor(list × percent / 100) — rounded DOWN, so the
customer never gets more off than the code states; amount off = the amount. Either way the charge
never goes below `MIN_CHARGE_MINOR` (1 ₽, YooKassa's minimum for a payment): the discount is capped
at list − 1 ₽, and a list price at or below 1 ₽ is not discounted at all.
"""

from __future__ import annotations

MIN_CHARGE_MINOR = 100
"""The least a discounted charge may be (1 ₽): YooKassa refuses a zero amount, and a discount never
turns a paid period into a free one (a free period is an operator's grant)."""


def discount_minor(list_minor: int, *, percent_off: int | None = None, amount_off_minor: int | None = None) -> int:
    """The discount on a charge of `list_minor` kopecks (see the module docstring)."""
    if list_minor < 0:
        raise ValueError("a list price is never negative")
    if percent_off is not None:
        if not 0 < percent_off < 100:
            raise ValueError("percent off is 1–99")
        raw = list_minor * percent_off // 100
    else:
        raw = amount_off_minor or 0
    return max(0, min(raw, list_minor - MIN_CHARGE_MINOR))
