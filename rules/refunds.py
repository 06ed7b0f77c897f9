"""The refund a customer gets for the days not used: one pure function, shared on purpose.

The payment processor refunds this amount when a subscription is canceled with "refund now",
and the command API shows the same number as a quote before the user decides. Services may not
import each other, so the arithmetic lives here, in the shared business rules, with no I/O at all.

The rule (docs/architecture.md, "Refunds"): refund = amount paid × (days in period − days used) / days in period, where
days used = the number of 24-hour periods that have *started* since the period was paid for (at
minute one a whole day is used), rounded DOWN to the kopeck, never below zero, and never more
than is left unrefunded. All arithmetic is in integer minor units, so there is no float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class RefundQuote:
    """How much goes back, and the days the amount was computed from."""

    amount_minor: int
    days_used: int
    days_in_period: int


def days_used(paid_at: datetime, now: datetime, period_days: int) -> int:
    """Started 24-hour periods since `paid_at`, capped at the period (0 only before `paid_at`)."""
    if paid_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("paid_at and now must be timezone-aware")
    elapsed = now - paid_at
    if elapsed < timedelta(0):
        return 0  # the paid period has not started yet (a renewal charged before the old one ended)
    return min(elapsed // DAY + 1, period_days)


def refund_amount(
    paid_minor: int,
    paid_at: datetime,
    period_days: int,
    now: datetime,
    already_refunded_minor: int = 0,
) -> RefundQuote:
    """The refund for canceling now a period of `period_days` paid `paid_minor` at `paid_at`.

    `paid_at` is when the paid period started (the payment time for a purchase). The result is
    rounded down to the kopeck and clamped to [0, paid_minor - already_refunded_minor].
    """
    if period_days < 1:
        raise ValueError("period_days must be at least 1")
    if paid_minor < 0 or already_refunded_minor < 0:
        raise ValueError("amounts must not be negative")
    used = days_used(paid_at, now, period_days)
    prorated = paid_minor * (period_days - used) // period_days  # floor division = round down
    left = max(paid_minor - already_refunded_minor, 0)
    return RefundQuote(amount_minor=max(0, min(prorated, left)), days_used=used, days_in_period=period_days)
