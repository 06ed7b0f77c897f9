"""What a subscription pays: the one place a renewal's amount and a price change's dates are computed.

`renewal_price` is THE amount of a renewal charge: the renewal decider calls it, and so should
anything that charges "what the renewal would" (a past-due customer paying now) or adjusts it (a
promo discount for the first periods) — change it here, never next to a caller. Pure, no I/O.

A plan's price change reaches an existing subscriber only through a `PriceChangeAnnounced` on the
account (docs/decisions/0120): the notice names the first renewal at the new price, which is the
first period start at/after the plan's effective date that is at least the notice period after the
notice itself. A renewal never charges a price the subscriber was not told about in time.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from schemas import Money

from payment_processor.domain.state import Subscription


def renewal_price(sub: Subscription, period_start: datetime) -> Money:
    """The amount a renewal of `sub` for the period starting at `period_start` charges.

    The checkout price, or the newest announced price whose first renewal is at or before
    `period_start` (announcements are ordered by that renewal, then by the plan's effective date).
    """
    price = sub.price
    best: tuple[datetime, datetime] | None = None
    for step in sub.price_steps:
        key = (step.starts_at, step.effective_at)
        if step.starts_at <= period_start and (best is None or key >= best):
            price, best = step.price, key
    return price


def first_renewal_at_new_price(
    period_end: datetime, period_days: int, effective_at: datetime, notice_at: datetime, notice_days: int
) -> datetime:
    """The first period start (`period_end` + k × `period_days`, k ≥ 0) at or after `effective_at`
    that is at least `notice_days` after `notice_at`: a subscriber told late keeps the old price one
    period longer rather than paying a price announced too close to the charge."""
    earliest = max(effective_at, notice_at + timedelta(days=notice_days))
    if period_end >= earliest:
        return period_end
    period = timedelta(days=max(period_days, 1))
    return period_end + period * math.ceil((earliest - period_end) / period)
