"""The refund arithmetic of docs/architecture.md ("Refunds"), table-driven: started days, round down, clamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rules.refunds import RefundQuote, days_used, refund_amount

PAID_AT = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "case, paid_minor, period_days, elapsed, already_refunded, expected",
    [
        # 299.00 for 30 days: one started day at minute one -> 29/30 back, rounded down
        ("minute one", 29900, 30, timedelta(minutes=1), 0, RefundQuote(28903, 1, 30)),
        ("the very instant of payment", 29900, 30, timedelta(0), 0, RefundQuote(28903, 1, 30)),
        ("23h59m is still day one", 29900, 30, timedelta(hours=23, minutes=59), 0, RefundQuote(28903, 1, 30)),
        ("exactly 24h starts day two", 29900, 30, timedelta(hours=24), 0, RefundQuote(27906, 2, 30)),
        ("mid-period", 29900, 30, timedelta(days=14, hours=3), 0, RefundQuote(14950, 15, 30)),
        ("the last day", 29900, 30, timedelta(days=29, hours=1), 0, RefundQuote(0, 30, 30)),
        ("the day before the last", 29900, 30, timedelta(days=28, hours=1), 0, RefundQuote(996, 29, 30)),
        ("after the end", 29900, 30, timedelta(days=45), 0, RefundQuote(0, 30, 30)),
        ("an earlier partial refund caps it", 29900, 30, timedelta(days=1, hours=1), 20000, RefundQuote(9900, 2, 30)),
        ("a smaller earlier refund does not", 29900, 30, timedelta(days=1, hours=1), 1000, RefundQuote(27906, 2, 30)),
        ("everything refunded already", 29900, 30, timedelta(minutes=5), 29900, RefundQuote(0, 1, 30)),
        ("over-refunded data never goes negative", 29900, 30, timedelta(minutes=5), 40000, RefundQuote(0, 1, 30)),
        ("large amount, 1 year", 99_999_999_999, 365, timedelta(days=100, minutes=1), 0, RefundQuote(72_328_767_122, 101, 365)),
        ("small amount rounds down to 0", 1, 30, timedelta(minutes=1), 0, RefundQuote(0, 1, 30)),
        ("three kopecks over three days", 3, 3, timedelta(minutes=1), 0, RefundQuote(2, 1, 3)),
        ("one-day period is used at once", 10000, 1, timedelta(seconds=1), 0, RefundQuote(0, 1, 1)),
        ("free (granted) subscription", 0, 30, timedelta(days=3), 0, RefundQuote(0, 4, 30)),
        ("period not started yet (renewal paid early)", 29900, 30, timedelta(hours=-5), 0, RefundQuote(29900, 0, 30)),
    ],
)
def test_refund_amount(
    case: str, paid_minor: int, period_days: int, elapsed: timedelta, already_refunded: int, expected: RefundQuote
) -> None:
    assert refund_amount(paid_minor, PAID_AT, period_days, PAID_AT + elapsed, already_refunded) == expected, case


def test_result_is_rounded_down_never_up() -> None:
    # 100.00 over 3 days, one used: 66.666... -> 66.66
    assert refund_amount(10000, PAID_AT, 3, PAID_AT + timedelta(hours=1)).amount_minor == 6666


def test_time_zones_do_not_change_the_answer() -> None:
    moscow = timezone(timedelta(hours=3))
    now = PAID_AT + timedelta(days=2, hours=1)
    assert refund_amount(29900, PAID_AT.astimezone(moscow), 30, now) == refund_amount(29900, PAID_AT, 30, now)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"period_days": 0},
        {"paid_minor": -1},
        {"already_refunded_minor": -1},
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, int]) -> None:
    args = {"paid_minor": 100, "paid_at": PAID_AT, "period_days": 30, "now": PAID_AT, "already_refunded_minor": 0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        refund_amount(**args)  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        days_used(PAID_AT.replace(tzinfo=None), PAID_AT, 30)
